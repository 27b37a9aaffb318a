/*
 * netstack.c: ARP, IPv4, ICMP echo and UDP echo for the test guests.
 *
 * Every frame is untrusted: each length and header field is checked before
 * it is used, and anything unexpected is dropped. Replies are built in place
 * in the receive buffer (addresses swapped) and written back to the TAP.
 * All multi-byte wire fields are big-endian (network order).
 */
#include "netstack.h"

#define ETH_HLEN 14
#define ETH_ALEN 6
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806

#define ARP_HTYPE_ETHERNET 1
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY 2
#define ARP_LEN 28 /* Ethernet/IPv4 ARP payload */

#define IPV4_MIN_HLEN 20
#define IPV4_PROTO_ICMP 1
#define IPV4_PROTO_UDP 17
#define IPV4_FLAG_MF 0x2000
#define IPV4_FRAG_OFFSET 0x1fff
#define IPV4_REPLY_TTL 64

#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8
#define ICMP_HLEN 8
#define UDP_HLEN 8

#define EAGAIN 11
#define NS_PER_S 1000000000ULL

/* Large enough for any TAP MTU (at most 65535) plus the Ethernet header. */
static uint8_t frame[65536 + ETH_HLEN];

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void swap_bytes(uint8_t *a, uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t t = a[i];
        a[i] = b[i];
        b[i] = t;
    }
}

/* The Internet checksum (RFC 1071): one's-complement sum of 16-bit
 * big-endian words, an odd last byte padded with zero. A correct header or
 * message sums (checksum field included) to 0. */
static uint16_t inet_checksum(const uint8_t *p, size_t n)
{
    uint64_t sum = 0;
    for (; n >= 2; p += 2, n -= 2)
        sum += get16(p);
    if (n)
        sum += (uint64_t)p[0] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static void send_frame(const struct netstack *ns, const uint8_t *buf, size_t len)
{
    /* A full TAP queue (EAGAIN) just drops the reply, as a NIC would. */
    kit_syscall(KIT_SYS_write, ns->dev->hostfd, (long)buf, (long)len, 0, 0, 0);
}

/* Ethernet header: dst MAC (0), src MAC (6), ethertype (12). A reply goes
 * back to the sender, from our MAC. */
static void eth_turn_around(const struct netstack *ns, uint8_t *eth)
{
    memcpy(eth, eth + ETH_ALEN, ETH_ALEN);
    memcpy(eth + ETH_ALEN, ns->dev->u.net.mac, ETH_ALEN);
}

/* ARP for IPv4 over Ethernet (RFC 826): htype (0), ptype (2), hlen (4),
 * plen (5), op (6), sender MAC (8), sender IP (14), target MAC (18),
 * target IP (24). Answer "who has <our IP>" with our MAC. */
static void handle_arp(const struct netstack *ns, uint8_t *eth, size_t len)
{
    uint8_t *arp = eth + ETH_HLEN;
    if (len < ETH_HLEN + ARP_LEN)
        return;
    if (get16(arp) != ARP_HTYPE_ETHERNET || get16(arp + 2) != ETHERTYPE_IPV4 ||
        arp[4] != ETH_ALEN || arp[5] != 4 || get16(arp + 6) != ARP_OP_REQUEST)
        return;
    if (memcmp(arp + 24, ns->ip, 4) != 0)
        return;
    put16(arp + 6, ARP_OP_REPLY);
    memcpy(arp + 18, arp + 8, ETH_ALEN + 4);      /* target := the asker */
    memcpy(arp + 8, ns->dev->u.net.mac, ETH_ALEN); /* sender := us */
    memcpy(arp + 14, ns->ip, 4);
    eth_turn_around(ns, eth);
    send_frame(ns, eth, ETH_HLEN + ARP_LEN);
}

/* ICMP echo (RFC 792): type (0), code (1), checksum (2), then identifier,
 * sequence and payload, all echoed unchanged. */
static int handle_icmp(struct netstack *ns, uint8_t *icmp, size_t len)
{
    if (len < ICMP_HLEN || icmp[0] != ICMP_ECHO_REQUEST || icmp[1] != 0)
        return 0;
    if (inet_checksum(icmp, len) != 0)
        return 0;
    icmp[0] = ICMP_ECHO_REPLY;
    put16(icmp + 2, 0);
    put16(icmp + 2, inet_checksum(icmp, len));
    ns->echo_answered++;
    return 1;
}

/* UDP (RFC 768): src port (0), dst port (2), length (4), checksum (6).
 * Swapping the ports here and the addresses in the IPv4 header leaves the
 * checksum (a commutative sum over the pseudo-header, header and data)
 * unchanged, and 0 ("no checksum") stays valid for IPv4, so it is kept. */
static int handle_udp(const struct netstack *ns, uint8_t *udp, size_t len)
{
    if (!ns->udp_echo_port || len < UDP_HLEN || get16(udp + 2) != ns->udp_echo_port)
        return 0;
    if (get16(udp + 4) != len)
        return 0;
    swap_bytes(udp, udp + 2, 2);
    return 1;
}

/* IPv4 (RFC 791): version/IHL (0), total length (2), flags/fragment
 * offset (6), TTL (8), protocol (9), header checksum (10), src (12),
 * dst (16), options up to IHL*4. Only unfragmented datagrams to our
 * address are answered; the reply swaps the addresses. */
static void handle_ipv4(struct netstack *ns, uint8_t *eth, size_t len)
{
    uint8_t *ip = eth + ETH_HLEN;
    size_t avail = len - ETH_HLEN;
    if (avail < IPV4_MIN_HLEN || ip[0] >> 4 != 4)
        return;
    size_t hlen = (size_t)(ip[0] & 0xf) * 4;
    size_t total = get16(ip + 2);
    if (hlen < IPV4_MIN_HLEN || total < hlen || total > avail) /* extra bytes: Ethernet padding */
        return;
    if (inet_checksum(ip, hlen) != 0 || memcmp(ip + 16, ns->ip, 4) != 0)
        return;
    if (get16(ip + 6) & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET))
        return;
    int reply = 0;
    if (ip[9] == IPV4_PROTO_ICMP)
        reply = handle_icmp(ns, ip + hlen, total - hlen);
    else if (ip[9] == IPV4_PROTO_UDP)
        reply = handle_udp(ns, ip + hlen, total - hlen);
    if (!reply)
        return;
    swap_bytes(ip + 12, ip + 16, 4);
    ip[8] = IPV4_REPLY_TTL;
    put16(ip + 10, 0);
    put16(ip + 10, inet_checksum(ip, hlen));
    eth_turn_around(ns, eth);
    send_frame(ns, eth, ETH_HLEN + total);
}

static void handle_frame(struct netstack *ns, uint8_t *eth, size_t len)
{
    if (len < ETH_HLEN)
        return;
    uint16_t type = get16(eth + 12);
    if (type == ETHERTYPE_ARP)
        handle_arp(ns, eth, len);
    else if (type == ETHERTYPE_IPV4)
        handle_ipv4(ns, eth, len);
}

/* Read until the TAP is empty: the fd is non-blocking, EAGAIN means done. */
static void drain(struct netstack *ns)
{
    size_t cap = (size_t)ns->dev->u.net.mtu + ETH_HLEN;
    if (cap > sizeof frame)
        cap = sizeof frame;
    for (;;) {
        long n = kit_syscall(KIT_SYS_read, ns->dev->hostfd, (long)frame, (long)cap, 0, 0, 0);
        if (n <= 0)
            return; /* -EAGAIN: nothing more; any other error: try next time */
        handle_frame(ns, frame, (size_t)n);
        if (ns->exit_after && ns->echo_answered >= ns->exit_after)
            return;
    }
}

int netstack_run(struct netstack *ns)
{
    for (;;) {
        kit_yield(ns->bi, kit_monotonic_ns() + NS_PER_S);
        /* Read even on a timeout: a frame costs nothing to look for, and
         * this way a lost wakeup can never stall the guest. */
        drain(ns);
        if (ns->exit_after && ns->echo_answered >= ns->exit_after) {
            kit_puts("net: answered ");
            kit_put_u64(ns->echo_answered);
            kit_puts("\n");
            return 0;
        }
    }
}

/* "A.B.C.D/P" with each part in range; the prefix length is checked but
 * not needed (the guest only answers for its own address). */
static int parse_ipv4(const char *s, uint8_t ip[4])
{
    for (int part = 0; part < 5; part++) {
        if (*s < '0' || *s > '9')
            return 0;
        uint64_t v = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 4) {
            v = v * 10 + (uint64_t)(*s++ - '0');
            digits++;
        }
        char want = part < 3 ? '.' : part == 3 ? '/' : 0;
        if (*s != want || v > (part < 4 ? 255u : 32u))
            return 0;
        if (part < 4)
            ip[part] = (uint8_t)v;
        s++;
    }
    return 1;
}

static void put_ready_line(const struct netstack *ns)
{
    kit_puts("net: ready mac=");
    for (int i = 0; i < ETH_ALEN; i++) {
        if (i)
            kit_puts(":");
        kit_put_hex_byte(ns->dev->u.net.mac[i]);
    }
    kit_puts(" mtu=");
    kit_put_u64(ns->dev->u.net.mtu);
    kit_puts(" ip=");
    for (int i = 0; i < 4; i++) {
        if (i)
            kit_puts(".");
        kit_put_u64(ns->ip[i]);
    }
    kit_puts("\n");
}

int netstack_init(struct netstack *ns, const struct kit_boot_info *bi, const char *cmdline)
{
    memset(ns, 0, sizeof *ns);
    ns->bi = bi;
    ns->dev = kit_device(bi, "service0", KIT_MFT_NET_BASIC, &ns->dev_index);
    if (!ns->dev || !ns->dev->attached) {
        kit_puts("net: no net device \"service0\"\n");
        return 1;
    }
    static char storage[8192];
    char *argv[64];
    int argc = kit_split_args(cmdline, storage, sizeof storage, argv, 64);
    if (argc < 0) {
        kit_puts("net: too many arguments\n");
        return 64;
    }
    int have_ip = 0;
    for (int i = 0; i < argc; i++) {
        if (kit_startswith(argv[i], "--ipv4=")) {
            if (!parse_ipv4(argv[i] + 7, ns->ip)) {
                kit_puts("net: malformed --ipv4 (want A.B.C.D/P): ");
                kit_puts(argv[i]);
                kit_puts("\n");
                return 64;
            }
            have_ip = 1;
        } else if (kit_startswith(argv[i], "--exit-after=")) {
            if (!kit_parse_num(argv[i] + 13, &ns->exit_after)) {
                kit_puts("net: malformed --exit-after\n");
                return 64;
            }
        }
    }
    if (!have_ip) {
        kit_puts("net: --ipv4=A.B.C.D/P is required\n");
        return 64;
    }
    put_ready_line(ns);
    return 0;
}
