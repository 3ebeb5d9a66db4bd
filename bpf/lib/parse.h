/*
 * Packet parsing: Ethernet, IPv4 (with options) and the L4 header fields
 * policy needs. Every read goes through bpf_skb_load_bytes(), which bounds
 * checks against skb->len and also works on non-linear skbs, so the parser
 * never needs bpf_skb_pull_data() and never reads past the packet.
 */
#ifndef PALISADE_LIB_PARSE_H
#define PALISADE_LIB_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi/reasons.h"

#ifndef IPPROTO_ICMP
#define IPPROTO_ICMP 1
#endif
#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#ifndef IPPROTO_UDP
#define IPPROTO_UDP 17
#endif
#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

/* linux/icmp.h drags in libc headers, so the few ICMP bits are here. */
#define PAL_ICMP_ECHOREPLY 0
#define PAL_ICMP_DEST_UNREACH 3
#define PAL_ICMP_ECHO 8
#define PAL_ICMP_TIME_EXCEEDED 11
#define PAL_ICMP_PARAMETERPROB 12
/* An ICMP error: 8 bytes of header, then the offending datagram's IP header. */
#define PAL_ICMP_ERROR_HLEN 8

struct pal_icmp_echo {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__be16 id;
	__be16 sequence;
};

#define PAL_IP_MF 0x2000
#define PAL_IP_OFFSET 0x1fff

/* Returned by pal_parse() for ARP, which passes untouched. */
#define PAL_PARSE_ARP 1

/* Fragment position of an IPv4 packet. */
#define PAL_FRAG_NONE 0  /* not fragmented */
#define PAL_FRAG_FIRST 1 /* MF set, offset 0: carries the L4 header */
#define PAL_FRAG_LATER 2 /* offset > 0: no L4 header */

/* TCP flags the datapath cares about (byte 13 of the TCP header). */
#define PAL_TCP_FIN 0x01
#define PAL_TCP_SYN 0x02
#define PAL_TCP_RST 0x04
#define PAL_TCP_ACK 0x10

struct pal_pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;    /* ICMP echo: identifier of a request */
	__be16 dport;    /* ICMP echo: identifier of a reply */
	__be16 ethertype;
	__be16 frag_id;  /* IPv4 identification */
	__u8 protocol;
	__u8 frag;       /* PAL_FRAG_* */
	__u8 tcp_flags;
	__u8 has_ports;  /* protocol carries ports (TCP/UDP/SCTP/ICMP) */
	/*
	 * ICMP errors (destination unreachable, time exceeded, parameter
	 * problem) quote the header of the datagram they are about: its tuple,
	 * in the direction it was sent, when the quote is complete.
	 */
	__u8 icmp_error;
	__u8 inner_protocol;
	__be32 inner_saddr;
	__be32 inner_daddr;
	__be16 inner_sport;
	__be16 inner_dport;
};

/*
 * Minimum L4 header bytes needed for the ports (or ICMP type/id):
 * TCP 20, UDP 8, SCTP 12 (common header), ICMP 8. 0 = portless protocol.
 */
static __always_inline __u32 pal_l4_min_len(__u8 protocol)
{
	switch (protocol) {
	case IPPROTO_TCP:
		return sizeof(struct tcphdr);
	case IPPROTO_UDP:
		return sizeof(struct udphdr);
	case IPPROTO_SCTP:
		return 12;
	case IPPROTO_ICMP:
		return sizeof(struct pal_icmp_echo);
	default:
		return 0;
	}
}

/*
 * Reads the tuple of the datagram an ICMP error quotes (its IP header at
 * off). A quote too short for the ports leaves icmp_error unset: the error
 * is then an ordinary ICMP packet for policy.
 */
static __always_inline void pal_parse_icmp_error(struct __sk_buff *skb, __u32 off,
						 struct pal_pkt *pkt)
{
	struct iphdr ip;
	__u32 l4;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return;
	if (ip.version != 4 || ip.ihl < 5)
		return;
	l4 = off + (__u32)ip.ihl * 4;
	switch (ip.protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) < 0)
			return;
		pkt->inner_sport = ports[0];
		pkt->inner_dport = ports[1];
		break;
	}
	case IPPROTO_ICMP: {
		struct pal_icmp_echo echo;

		if (bpf_skb_load_bytes(skb, l4, &echo, sizeof(echo)) < 0)
			return;
		if (echo.type == PAL_ICMP_ECHO)
			pkt->inner_sport = echo.id;
		else if (echo.type == PAL_ICMP_ECHOREPLY)
			pkt->inner_dport = echo.id;
		else
			return;
		break;
	}
	default:
		return;
	}
	pkt->inner_saddr = ip.saddr;
	pkt->inner_daddr = ip.daddr;
	pkt->inner_protocol = ip.protocol;
	pkt->icmp_error = 1;
}

/*
 * Parses the packet into pkt. Returns 0 for an IPv4 packet, PAL_PARSE_ARP
 * for ARP, or a negative PAL_REASON_* for a packet to drop. For a later
 * fragment (PAL_FRAG_LATER) the ports are left 0: the caller fills them in
 * from the fragment map.
 */
static __always_inline int pal_parse(struct __sk_buff *skb, struct pal_pkt *pkt)
{
	struct ethhdr eth;
	struct iphdr ip;
	__u32 hlen, tot_len, l4_off, l4_len, min;
	__u16 frag_off;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return PAL_REASON_INVALID_PACKET;
	pkt->ethertype = eth.h_proto;
	if (eth.h_proto == bpf_htons(ETH_P_ARP))
		return PAL_PARSE_ARP;
	if (eth.h_proto != bpf_htons(ETH_P_IP))
		return PAL_REASON_UNSUPPORTED_L3;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return PAL_REASON_INVALID_PACKET;
	if (ip.version != 4 || ip.ihl < 5)
		return PAL_REASON_INVALID_PACKET;
	hlen = (__u32)ip.ihl * 4;
	tot_len = bpf_ntohs(ip.tot_len);
	/*
	 * The IP datagram must fit in the frame; Ethernet padding after it is
	 * fine. (IPv4 BIG TCP, tot_len 0 for GSO packets over 64 KiB, is not
	 * supported: it is off unless gso_ipv4_max_size is raised.)
	 */
	if (tot_len < hlen || tot_len > skb->len - ETH_HLEN)
		return PAL_REASON_INVALID_PACKET;

	pkt->saddr = ip.saddr;
	pkt->daddr = ip.daddr;
	pkt->protocol = ip.protocol;
	pkt->frag_id = ip.id;
	frag_off = bpf_ntohs(ip.frag_off);
	if (frag_off & PAL_IP_OFFSET)
		pkt->frag = PAL_FRAG_LATER;
	else if (frag_off & PAL_IP_MF)
		pkt->frag = PAL_FRAG_FIRST;
	else
		pkt->frag = PAL_FRAG_NONE;

	min = pal_l4_min_len(ip.protocol);
	if (min == 0)
		return 0;
	pkt->has_ports = 1;
	if (pkt->frag == PAL_FRAG_LATER)
		return 0;

	/*
	 * The L4 header must be complete in this datagram (for a first
	 * fragment: in the first fragment; a first fragment too short for the
	 * ports is the "tiny fragment" attack and is dropped).
	 */
	l4_off = ETH_HLEN + hlen;
	l4_len = tot_len - hlen;
	if (l4_len < min)
		return PAL_REASON_INVALID_PACKET;

	switch (ip.protocol) {
	case IPPROTO_TCP: {
		struct tcphdr tcp;

		if (bpf_skb_load_bytes(skb, l4_off, &tcp, sizeof(tcp)) < 0)
			return PAL_REASON_INVALID_PACKET;
		if (tcp.doff < 5 || (__u32)tcp.doff * 4 > l4_len)
			return PAL_REASON_INVALID_PACKET;
		pkt->sport = tcp.source;
		pkt->dport = tcp.dest;
		pkt->tcp_flags = (tcp.fin ? PAL_TCP_FIN : 0) | (tcp.syn ? PAL_TCP_SYN : 0) |
				 (tcp.rst ? PAL_TCP_RST : 0) | (tcp.ack ? PAL_TCP_ACK : 0);
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* UDP and SCTP both start with source and destination port. */
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)) < 0)
			return PAL_REASON_INVALID_PACKET;
		pkt->sport = ports[0];
		pkt->dport = ports[1];
		break;
	}
	case IPPROTO_ICMP: {
		struct pal_icmp_echo icmp;

		if (bpf_skb_load_bytes(skb, l4_off, &icmp, sizeof(icmp)) < 0)
			return PAL_REASON_INVALID_PACKET;
		/*
		 * Echo: the identifier stands in for the ports so that a reply
		 * matches the reversed tuple of its request. Other types: 0/0.
		 */
		if (icmp.type == PAL_ICMP_ECHO)
			pkt->sport = icmp.id;
		else if (icmp.type == PAL_ICMP_ECHOREPLY)
			pkt->dport = icmp.id;
		else if ((icmp.type == PAL_ICMP_DEST_UNREACH || icmp.type == PAL_ICMP_TIME_EXCEEDED ||
			  icmp.type == PAL_ICMP_PARAMETERPROB) &&
			 pkt->frag == PAL_FRAG_NONE)
			pal_parse_icmp_error(skb, l4_off + PAL_ICMP_ERROR_HLEN, pkt);
		break;
	}
	}
	return 0;
}

#endif
