/*
 * netstack.h: the smallest IPv4 host a test guest needs, over one spt net
 * device: answers ARP requests and ICMP echo requests for its address and,
 * if asked, echoes UDP datagrams sent to one port. Shared by `net` and
 * `netbench` (netbench compiles net/netstack.c through a one-line include).
 */
#ifndef SPT_NETSTACK_H
#define SPT_NETSTACK_H

#include "kit.h"

struct netstack {
    const struct kit_boot_info *bi;
    const struct kit_mft_entry *dev;
    uint32_t dev_index;     /* manifest index: the bit kit_yield reports */
    uint8_t ip[4];          /* our IPv4 address, network order */
    uint16_t udp_echo_port; /* 0: no UDP echo */
    uint64_t exit_after;    /* 0: run forever */
    uint64_t echo_answered; /* ICMP echo requests answered so far */
};

/* Find the net device "service0", parse `--ipv4=A.B.C.D/P` and the optional
 * `--exit-after=N` from the command line (other arguments are ignored), and
 * print the "net: ready ..." line. Returns 0, or the exit status to leave
 * with (64 for a malformed argument, 1 without a device). */
int netstack_init(struct netstack *ns, const struct kit_boot_info *bi, const char *cmdline);

/* Yield (1 s at a time) and answer frames until --exit-after is reached,
 * then print "net: answered N" and return 0. Never returns otherwise. */
int netstack_run(struct netstack *ns);

#endif
