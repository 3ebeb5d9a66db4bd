/*
 * The address tuple of a socket argument (struct pal_rt_sock): from a
 * struct sockaddr (user memory for syscall arguments, else kernel memory), a kernel struct sock or the IP
 * header of a struct sk_buff (CO-RE reads).
 */
#ifndef PALISADE_LIB_SOCK_H
#define PALISADE_LIB_SOCK_H

#include "vmlinux_min.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "runtime_maps.h"

#define PAL_AF_INET 2
#define PAL_AF_INET6 10
#define PAL_IPPROTO_TCP 6
#define PAL_IPPROTO_UDP 17

/* struct sockaddr_in / sockaddr_in6, as far as read. */
struct pal_sockaddr_in {
	__u16 family;
	__be16 port;
	__u8 addr[4];
};

struct pal_sockaddr_in6 {
	__u16 family;
	__be16 port;
	__u32 flowinfo;
	__u8 addr[16];
};

/* Reads n bytes of user (user != 0) or kernel memory. */
static __always_inline long pal_read_mem(void *dst, __u32 n, const void *src, int user)
{
	return user ? bpf_probe_read_user(dst, n, src) : bpf_probe_read_kernel(dst, n, src);
}

/*
 * A struct sockaddr in user memory (a syscall's argument) or kernel memory
 * (a function's): its family, and for AF_INET/AF_INET6 its address and port
 * as the source. Returns 0, or -1 when the memory cannot be read.
 */
static __always_inline int pal_sock_from_addr(struct pal_rt_sock *t, const void *addr, int user)
{
	__u16 family = 0;

	if (!addr || pal_read_mem(&family, sizeof(family), addr, user) < 0)
		return -1;
	t->family = family;
	if (family == PAL_AF_INET) {
		struct pal_sockaddr_in in;

		if (pal_read_mem(&in, sizeof(in), addr, user) < 0)
			return -1;
		t->sport = bpf_ntohs(in.port);
		__builtin_memcpy(t->saddr, in.addr, 4);
		t->flags = PAL_SOCKF_IP;
	} else if (family == PAL_AF_INET6) {
		struct pal_sockaddr_in6 in6;

		if (pal_read_mem(&in6, sizeof(in6), addr, user) < 0)
			return -1;
		t->sport = bpf_ntohs(in6.port);
		__builtin_memcpy(t->saddr, in6.addr, 16);
		t->flags = PAL_SOCKF_IP;
	}
	return 0;
}

/* A struct sock: family, protocol, state, and the addresses and ports of
 * IP sockets (source: the local end). */
static __always_inline int pal_sock_from_sock(struct pal_rt_sock *t, struct sock *sk)
{
	__u16 family;

	if (!sk)
		return -1;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->family = family;
	t->protocol = BPF_CORE_READ(sk, sk_protocol);
	t->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	t->flags = PAL_SOCKF_STATE;
	if (family == PAL_AF_INET) {
		bpf_core_read(t->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(t->daddr, 4, &sk->__sk_common.skc_daddr);
	} else if (family == PAL_AF_INET6) {
		bpf_core_read(t->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(t->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		return 0;
	}
	t->flags |= PAL_SOCKF_IP;
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return 0;
}

/* The IP header of a struct sk_buff (and TCP/UDP ports); no state. */
static __always_inline int pal_sock_from_skb(struct pal_rt_sock *t, struct sk_buff *skb)
{
	unsigned char *head;
	__u8 first = 0, proto = 0;
	__u16 nh, th;
	__be16 ports[2] = {};

	if (!skb)
		return -1;
	head = BPF_CORE_READ(skb, head);
	nh = BPF_CORE_READ(skb, network_header);
	th = BPF_CORE_READ(skb, transport_header);
	if (!head || bpf_probe_read_kernel(&first, 1, head + nh) < 0)
		return -1;
	if ((first >> 4) == 4) {
		t->family = PAL_AF_INET;
		bpf_probe_read_kernel(&proto, 1, head + nh + 9);
		bpf_probe_read_kernel(t->saddr, 4, head + nh + 12);
		bpf_probe_read_kernel(t->daddr, 4, head + nh + 16);
	} else if ((first >> 4) == 6) {
		t->family = PAL_AF_INET6;
		bpf_probe_read_kernel(&proto, 1, head + nh + 6);
		bpf_probe_read_kernel(t->saddr, 16, head + nh + 8);
		bpf_probe_read_kernel(t->daddr, 16, head + nh + 24);
	} else {
		return -1;
	}
	t->protocol = proto;
	t->flags = PAL_SOCKF_IP;
	if ((proto == PAL_IPPROTO_TCP || proto == PAL_IPPROTO_UDP) &&
	    bpf_probe_read_kernel(ports, sizeof(ports), head + th) == 0) {
		t->sport = bpf_ntohs(ports[0]);
		t->dport = bpf_ntohs(ports[1]);
	}
	return 0;
}

#endif
