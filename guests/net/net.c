/* net: answers ARP and ICMP echo for --ipv4=A.B.C.D/P on "service0"
 * (see netstack.h); --exit-after=N exits 0 after N echo replies. */
#include "netstack.h"

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    struct netstack ns;
    int status = netstack_init(&ns, bi, cmdline);
    if (status)
        return status;
    return netstack_run(&ns);
}
