/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mem_drop: received TCP segments the kernel dropped for memory (issue 13,
 * finding 9), from skb:kfree_skb and its drop reason (5.17+; the reasons
 * below from 5.19). Read in 5.19.0, 6.1.15, 6.12.0 and 6.18.2
 * (net/ipv4/tcp_input.c, tcp_ipv4.c), the same shape in each:
 *
 *   PROTO_MEM in tcp_data_queue       tcp_try_rmem_schedule failed with a
 *                                     non-empty receive queue: TCPRcvQDrop +1
 *   PROTO_MEM in tcp_data_queue_ofo   the same for an out-of-order segment:
 *                                     TCPOFODrop +1 (its only increment)
 *   TCP_OFO_QUEUE_PRUNE               tcp_prune_ofo_queue threw a queued
 *                                     out-of-order skb away; OfoPruned counts
 *                                     the calls, not the skbs
 *   SOCKET_BACKLOG in tcp_add_backlog the backlog of a socket owned by its
 *                                     task went over rcvbuf + sndbuf/2 + 64 KiB:
 *                                     TCPBacklogDrop +1
 *
 * tcp_try_rmem_schedule fails for a full receive buffer (rmem_alloc above
 * sk_rcvbuf) as well as for a refused charge (tcp_mem, a memcg), so PROTO_MEM
 * is not only "protocol memory": the cause is derived from the socket at the
 * drop (VERDICT_DROP_RCVBUF, else mem_class).
 *
 * The reasons' numbers change between releases: CO-RE enum relocations
 * resolve them in the running kernel's BTF, and every other drop reason of
 * the host costs the three compares of drop_verdict() and an exit.
 *
 * Two argument lists: rx_sk, the receiving socket, from 6.11 (4 arguments);
 * before it (3 arguments) the socket comes from skb->sk for a pruned skb
 * (skb_set_owner_r queued it) and from a per-CPU note of tcp:tcp_probe for a
 * segment an ESTABLISHED socket drops (tcp_v4_rcv has stolen skb->sk); for
 * the rest the segment's headers give the flow and, where the device or the
 * route is still there, the namespace (rx_netns); an in-order or out-of-order
 * drop is then not told apart (no rcv_nxt).
 */
#ifndef __TCPOOM_MEM_DROP_BPF_H
#define __TCPOOM_MEM_DROP_BPF_H

#include "common.bpf.h"
#include "mem_class.bpf.h"

#define ETH_P_IP_BE	0x0008	/* htons(ETH_P_IP) on little-endian */
#define ETH_P_IPV6_BE	0xDD86	/* htons(ETH_P_IPV6) */

/* The site of a memory drop (PROTO_MEM: VERDICT_DROP_RCVQ | VERDICT_DROP_OFO
 * until split), 0 for every other reason. */
static __always_inline __u16 drop_verdict(__u32 reason)
{
	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_PROTO_MEM))
		return VERDICT_DROP_RCVQ | VERDICT_DROP_OFO;
	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_OFO_QUEUE_PRUNE))
		return VERDICT_DROP_PRUNE;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_SOCKET_BACKLOG) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_SOCKET_BACKLOG))
		return VERDICT_DROP_BACKLOG;
	return 0;
}

static __always_inline void tally_drop(__u16 verdict)
{
	struct tcpoom_counters *c = cpu_counters();

	if (verdict & VERDICT_DROP_PRUNE) {
		tally(c, CNT_DROP_PRUNE);
		return;
	}
	tally(c, CNT_MEM_DROP);
	if (verdict == (VERDICT_DROP_RCVQ | VERDICT_DROP_OFO))
		tally(c, CNT_DROP_UNSPLIT);
	else if (verdict & VERDICT_DROP_RCVQ)
		tally(c, CNT_DROP_RCVQ);
	else if (verdict & VERDICT_DROP_OFO)
		tally(c, CNT_DROP_OFO);
	else
		tally(c, CNT_DROP_BACKLOG);
}

/* A full socket of TCP: not a request or TIME_WAIT mini-socket. */
static __always_inline bool tcp_full_sock(const struct sock *sk)
{
	__u8 state;

	if (!sk)
		return false;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == 6 /* TIME_WAIT */ || state == 12 /* NEW_SYN_RECV */)
		return false;
	return sk_protocol_of(sk) == IPPROTO_TCP;
}

/* PROTO_MEM: the segment at rcv_nxt (or overlapping it) was refused by
 * tcp_data_queue, one past it by tcp_data_queue_ofo; rcv_nxt has not moved. */
static __always_inline __u16 split_proto_mem(const struct sk_buff *skb, const struct sock *sk)
{
	__u32 seq = 0, rcv_nxt = BPF_CORE_READ((struct tcp_sock *)sk, rcv_nxt);

	bpf_core_read(&seq, sizeof(seq), &skb->cb[0]);	/* TCP_SKB_CB(skb)->seq */
	return (__s32)(rcv_nxt - seq) < 0 ? VERDICT_DROP_OFO : VERDICT_DROP_RCVQ;
}

/* The cause: a full receive buffer (tcp_can_ingest false even after
 * pruning), else a refused charge classified as mem_exceed's. */
static __always_inline void drop_cause(struct tcpoom_event *e, const struct sk_buff *skb,
				       const struct sock *sk, struct proto *prot)
{
	__u32 len = BPF_CORE_READ(skb, len);

	if (e->verdict & VERDICT_DROP_BACKLOG ||
	    (e->rcvbuf >= 0 && e->rmem_alloc >= 0 && (__s64)e->rmem_alloc + len > e->rcvbuf)) {
		e->verdict |= VERDICT_DROP_RCVBUF;
		e->memcg_usage = e->memcg_limit = -1;
		return;
	}
	classify_refusal(e, sk, prot, e->memory_allocated);
}

/* The filters for a socket pointer the verifier does not know as one (read
 * from skb->sk or a note): no sk_storage lookup, so --pid matches nothing. */
static __always_inline bool pass_filters_read(const struct sock *sk)
{
	if (filter_pid || (filter_netns && sk_netns(sk) != filter_netns))
		goto out;
	if (filter_port) {
		__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

		if (local_port(sk) != filter_port && dport != filter_port)
			goto out;
	}
	return true;
out:
	count(CNT_FILTERED);
	return false;
}

/* btf_sk: sk is tp_btf's rx_sk, a pointer the verifier trusts (sk_storage
 * takes only those); else a value read from memory. */
static __always_inline int drop_of_socket(struct sk_buff *skb, struct sock *sk, __u16 verdict,
					  __u32 reason, __u8 method, bool btf_sk)
{
	struct tcpoom_event ev, *e = &ev;
	struct proto *prot;

	if (btf_sk ? !pass_filters(sk) : !pass_filters_read(sk))
		return 0;
	tally_drop(verdict);
	prot = BPF_CORE_READ(sk, __sk_common.skc_prot);
	init_event(e, FAMILY_MEM_DROP, method);
	fill_socket(e, sk);
	fill_owner(e, sk, btf_sk);
	fill_memory(e, prot);
	e->verdict = verdict;
	e->reason = reason;
	e->exact |= FIELD_VERDICT;
	drop_cause(e, skb, sk, prot);
	emit(e);
	return 0;
}

/* The namespace a received segment was delivered in. tcp_v4_rcv and
 * tcp_v6_rcv clear skb->dev before they process it (5.19-6.18), so the input
 * route's device stands in: a device belongs to one namespace, the one of its
 * routes. tcp_add_backlog drops the route (skb_dst_drop): a segment processed
 * from a busy socket's backlog has neither, and its namespace is 0. */
static __always_inline __u32 rx_netns(const struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);

	if (!dev) {
		/* _skb_refdst: the dst pointer, bit 0 SKB_DST_NOREF */
		struct dst_entry *dst = (void *)(BPF_CORE_READ(skb, _skb_refdst) & ~1UL);

		if (dst)
			dev = BPF_CORE_READ(dst, dev);
	}
	return dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
}

/* Before 6.11, a drop of a segment not yet queued (skb->sk stolen by
 * tcp_v4_rcv): the flow from its headers, the namespace from its route. */
static __always_inline int drop_of_headers(struct sk_buff *skb, __u16 verdict, __u32 reason,
					   __u8 method)
{
	struct tcpoom_event ev, *e = &ev;
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u16 proto = BPF_CORE_READ(skb, protocol);
	__u32 netns = rx_netns(skb);
	struct tcphdr tcp = {};
	__u8 ipproto = 0;

	init_event(e, FAMILY_MEM_DROP, method);
	if (proto == ETH_P_IP_BE) {
		struct iphdr ip = {};

		bpf_probe_read_kernel(&ip, sizeof(ip), head + nh);
		ipproto = ip.protocol;
		e->af = AF_INET;
		__builtin_memcpy(e->saddr, &ip.daddr, 4);	/* the receiver's side is local */
		__builtin_memcpy(e->daddr, &ip.saddr, 4);
	} else if (proto == ETH_P_IPV6_BE) {
		struct ipv6hdr ip6 = {};

		bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh);
		ipproto = ip6.nexthdr;
		e->af = AF_INET6;
		__builtin_memcpy(e->saddr, &ip6.daddr, 16);
		__builtin_memcpy(e->daddr, &ip6.saddr, 16);
	}
	if (ipproto != IPPROTO_TCP)
		return 0;
	bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th);
	e->sport = bpf_ntohs(tcp.dest);
	e->dport = bpf_ntohs(tcp.source);
	if ((filter_netns && netns != filter_netns) || filter_pid ||
	    (filter_port && e->sport != filter_port && e->dport != filter_port)) {
		/* --pid: no socket, so no owner to compare */
		count(CNT_FILTERED);
		return 0;
	}
	tally_drop(verdict);
	e->netns = netns;
	e->verdict = verdict;
	e->reason = reason;
	e->exact |= FIELD_VERDICT;
	emit(e);
	return 0;
}

/* Before 6.11: the segment an ESTABLISHED socket is processing, noted per
 * CPU at tcp:tcp_probe (4.16+), which tcp_rcv_established fires first
 * (5.19, 6.1); tcp_data_queue drops that same skb on that CPU. A softirq
 * that interrupts backlog processing between the two replaces the note:
 * the drop then falls back to the headers. */
struct rx_note {
	__u64 skb;
	__u64 sk;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rx_note);
} rx_notes SEC(".maps");

static __always_inline int note_rx(const struct sock *sk, const struct sk_buff *skb)
{
	__u32 zero = 0;
	struct rx_note *n = bpf_map_lookup_elem(&rx_notes, &zero);

	if (n) {
		n->skb = (__u64)skb;
		n->sk = (__u64)sk;
	}
	return 0;
}

static __always_inline struct sock *noted_sk(const struct sk_buff *skb)
{
	__u32 zero = 0;
	struct rx_note *n = bpf_map_lookup_elem(&rx_notes, &zero);

	if (n && n->skb == (__u64)skb)
		return (struct sock *)n->sk;
	return NULL;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(drop_note_btf, struct sock *sk, struct sk_buff *skb)
{
	return note_rx(sk, skb);
}

SEC("raw_tp/tcp_probe")
int BPF_PROG(drop_note_raw, struct sock *sk, struct sk_buff *skb)
{
	return note_rx(sk, skb);
}

static __always_inline int on_kfree_skb(struct sk_buff *skb, __u32 reason, struct sock *rx_sk,
					bool has_rx_sk, __u8 method)
{
	__u16 verdict = drop_verdict(reason);
	struct sock *sk;

	if (!verdict)
		return 0;
	sk = has_rx_sk ? rx_sk : BPF_CORE_READ(skb, sk);
	if (!has_rx_sk && !sk && !(verdict & VERDICT_DROP_PRUNE))
		sk = noted_sk(skb);
	if (tcp_full_sock(sk)) {
		if (verdict == (VERDICT_DROP_RCVQ | VERDICT_DROP_OFO))
			verdict = split_proto_mem(skb, sk);
		return drop_of_socket(skb, sk, verdict, reason, method,
				      has_rx_sk && METHOD_BTF(method));
	}
	if (has_rx_sk || (verdict & VERDICT_DROP_PRUNE))
		return 0;	/* not TCP (UDP and others share PROTO_MEM) */
	return drop_of_headers(skb, verdict, reason, method);
}

/* 6.11+: kfree_skb(skb, location, reason, rx_sk) */
SEC("tp_btf/kfree_skb")
int BPF_PROG(drop_btf, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	return on_kfree_skb(skb, reason, rx_sk, true, METHOD_TP_BTF);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(drop_raw, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	return on_kfree_skb(skb, reason, rx_sk, true, METHOD_RAW_TP);
}

/* 5.19-6.10: kfree_skb(skb, location, reason); a fourth argument would fail
 * the verifier (tp_btf) or read past the arguments (raw_tp). */
SEC("tp_btf/kfree_skb")
int BPF_PROG(drop3_btf, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return on_kfree_skb(skb, reason, NULL, false, METHOD_TP_BTF);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(drop3_raw, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return on_kfree_skb(skb, reason, NULL, false, METHOD_RAW_TP);
}

#endif /* __TCPOOM_MEM_DROP_BPF_H */
