/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What every program of the CO-RE objects shares: the .rodata config set by
 * the loader, the ring buffer and the counters, the filters, and the reads of
 * a socket common to all families (fill_socket, fill_memory, fill_orphans).
 * The logic the bcc engine shares too is in verdict.h.
 */
#ifndef __TCPOOM_COMMON_BPF_H
#define __TCPOOM_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "core_fixes.bpf.h"
#include "tcpoom.h"
#include "verdict.h"
#include "owner.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define TCP_TIMEWAIT_LEN_S 60	/* include/net/tcp.h, every version */


/* Set by the loader before load (.rodata). */
const volatile __u32 filter_netns = 0;	/* 0: every namespace */
const volatile __u32 filter_pid = 0;	/* tgid of the socket's owner (owner.bpf.h) */
const volatile __u16 filter_port = 0;	/* local or remote port */
const volatile __u32 hz = 250;		/* CONFIG_HZ, for jiffies arithmetic */
const volatile __u8 oom_from_resets = 0; /* tcp_send_reset program reports oom_check */
/* Data symbols, from /proc/kallsyms where the kernel lists them
 * (CONFIG_KALLSYMS_ALL); 0 where it does not. Plain addresses rather than
 * __ksym externs, so libbpf never reads kallsyms itself at start-up. */
const volatile __u64 orphan_cache_addr = 0;	/* static int tcp_orphan_cache, 5.15.16+/6.0+ */
const volatile __u64 max_orphans_addr = 0;	/* int sysctl_tcp_max_orphans */
/* 1 where the kernel's BTF gives proto.orphan_count the type struct
 * percpu_counter * (up to 5.15.15). Set by the plan: a CO-RE field check
 * cannot tell, libbpf takes any two pointers as compatible, and on 5.15.16+
 * and 6.0-6.14 the member is a per-CPU unsigned int (finding 6). */
const volatile __u8 orphan_pcc = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);	/* resized by the loader */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcpoom_counters);
} counters SEC(".maps");

static __always_inline struct tcpoom_counters *cpu_counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&counters, &zero);
}

static __always_inline void count(__u32 slot)
{
	tally(cpu_counters(), slot);
}

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* The local port. tcp_set_state(TCP_CLOSE) releases the bound port
 * (inet_put_port zeroes skc_num) before the tracepoint fires; inet_sport keeps
 * it. */
static __always_inline __u16 local_port(const struct sock *sk)
{
	__u16 num = BPF_CORE_READ(sk, __sk_common.skc_num);

	if (num)
		return num;
	return bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
}

/* The filters are checked before anything is built; the family's counter
 * counts only what passes them, so it compares with the filtered namespace's
 * own TcpExt counters. */
static __always_inline bool pass_filters(const struct sock *sk)
{
	if (filter_netns && sk && sk_netns(sk) != filter_netns)
		goto out;
	if (filter_pid && owner_tgid(sk) != filter_pid)	/* --pid: the socket's owner */
		goto out;
	if (filter_port && sk) {
		__u16 sport = local_port(sk);
		__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

		if (sport != filter_port && dport != filter_port)
			goto out;
	}
	return true;
out:
	count(CNT_FILTERED);
	return false;
}

/* Wakeups. With flags 0 the kernel wakes a consumer that has caught up for
 * every record (an irq_work, then a poll return and a read in user space): in
 * a storm of single events that is a wakeup per handful of records, and the
 * consumer's fixed cost per wakeup and per batch dominates. The consumer reads
 * on a short timer instead (tracer/ringbuf.py POLL_PERIOD_S), so records go in
 * silently while the ring is less than a quarter full; above that each record
 * forces a wakeup (the consumer ignores wakeups below the same mark), so a
 * burst is drained long before the ring fills. bpf_ringbuf_query: 5.8, as the
 * ring buffer itself. */
static __always_inline __u64 wakeup_flags(void)
{
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >=
	    bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / WAKEUP_FILL_DIVISOR)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void emit(struct tcpoom_event *e)
{
	if (bpf_ringbuf_output(&events, e, sizeof(*e), wakeup_flags()))
		count(CNT_LOST_BASE + e->family);
}

/* sk_protocol: an 8-bit bitfield up to 5.5, a u16 from 5.6. A plain CO-RE
 * read of it on a bitfield kernel reads the bitfield's whole storage unit
 * ((protocol << 8) | flag bits on little-endian: never IPPROTO_TCP), and
 * libbpf does not refuse it: every read goes through here. */
static __always_inline __u32 sk_protocol_of(const struct sock *sk)
{
	return BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
}

/* 4-tuple, state, queues. */
static __always_inline void fill_socket(struct tcpoom_event *e, const struct sock *sk)
{
	e->skaddr = (__u64)sk;
	e->netns = sk_netns(sk);
	e->af = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = local_port(sk);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (e->af == AF_INET) {
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	} else if (bpf_core_field_exists(sk->__sk_common.skc_v6_daddr)) {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	e->wmem_queued = BPF_CORE_READ(sk, sk_wmem_queued);
	e->rmem_alloc = BPF_CORE_READ(sk, sk_backlog.rmem_alloc.counter);
	e->sndbuf = BPF_CORE_READ(sk, sk_sndbuf);
	e->rcvbuf = BPF_CORE_READ(sk, sk_rcvbuf);
	e->exact |= FIELD_SOCKET;
}

/* memory_allocated against tcp_mem, through sk->sk_prot: robust on every
 * version (the tcp_memory_allocated symbol is gone by 6.18). */
static __always_inline void fill_memory(struct tcpoom_event *e, struct proto *prot)
{
	atomic_long_t *allocated = BPF_CORE_READ(prot, memory_allocated);

	read_memory(e, allocated, BPF_CORE_READ(prot, sysctl_mem),
		    BPF_CORE_READ(prot, memory_pressure));
}

/* The orphan count and limit where the kernel lets us read them. */
static __always_inline void fill_orphans(struct tcpoom_event *e, const struct sock *sk)
{
	if (read_orphans(e, max_orphans_addr, orphan_cache_addr))
		return;
	/* up to 5.15.0: a percpu_counter; the kernel reads its count first and
	 * sums the per-CPU parts only when that is over the limit. */
	struct proto___orphan_pcc *prot = (void *)BPF_CORE_READ(sk, __sk_common.skc_prot);

	if (orphan_pcc && bpf_core_field_exists(prot->orphan_count)) {
		struct percpu_counter *pcc = BPF_CORE_READ(prot, orphan_count);
		s64 count = 0;

		if (pcc && !bpf_probe_read_kernel(&count, sizeof(count), &pcc->count)) {
			e->orphans = count < 0 ? 0 : count;
			e->derived |= FIELD_ORPHANS;
		}
	}
}

/* A new event of a socket: who, where, and the memory figures of its proto. */
static __always_inline void start_event(struct tcpoom_event *e, __u8 family, __u8 method,
					const struct sock *sk, struct proto *prot)
{
	init_event(e, family, method);
	fill_socket(e, sk);
	fill_owner(e, sk, METHOD_BTF(method));
	fill_memory(e, prot);
}

/* SOCK_MIN_SNDBUF = 2 * (2048 + SKB_DATA_ALIGN(sizeof(struct sk_buff))). */
static __always_inline int sock_min_sndbuf(void)
{
	int skb = (bpf_core_type_size(struct sk_buff) + 63) & ~63;

	return 2 * (2048 + skb);
}

#endif /* __TCPOOM_COMMON_BPF_H */
