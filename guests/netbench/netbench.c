/* netbench: the net guest plus a UDP echo service on port 7, for
 * throughput and latency measurements. */
#include "../net/netstack.h"

#define UDP_ECHO_PORT 7

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    struct netstack ns;
    int status = netstack_init(&ns, bi, cmdline);
    if (status)
        return status;
    ns.udp_echo_port = UDP_ECHO_PORT;
    return netstack_run(&ns);
}
