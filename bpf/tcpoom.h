/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tcpoom: the one definition of what crosses from the kernel programs to user space.
 *
 * Portable types only (no vmlinux.h), so the BPF side, the Python mirror
 * (tracer/events.py) and the bcc engine can all use it. The Python mirror is
 * checked against this layout through the compiled object's BTF by a test.
 */
#ifndef __TCPOOM_H
#define __TCPOOM_H

#define TCPOOM_COMM_LEN 16

/* The ring buffer wakes its consumer only once it is 1/WAKEUP_FILL_DIVISOR
 * full; below that the consumer reads on its timer (tracer/ringbuf.py, which
 * mirrors this value: a test checks the two agree). */
#define WAKEUP_FILL_DIVISOR 4

/* Event families (docs/design.md "Event families"). */
enum tcpoom_family {
	FAMILY_OOM_CHECK = 1,	/* tcp_check_oom said yes: the socket is killed */
	FAMILY_TW_OVERFLOW = 2,	/* no TIME_WAIT bucket: closed without TIME_WAIT */
	FAMILY_MEM_EXCEED = 3,	/* allocation refused at the tcp_mem hard limit */
	FAMILY_PRESSURE = 4,	/* TCP entered or left memory-pressure mode */
	FAMILY_MEM_DROP = 5,	/* a received segment dropped for memory (skb:kfree_skb) */
};
#define FAMILY_MAX 6

/* How the event was caught, best first. */
enum tcpoom_method {
	METHOD_FENTRY = 1,
	METHOD_KPROBE = 2,
	METHOD_TP_BTF = 3,
	METHOD_RAW_TP = 4,
	METHOD_SAMPLED = 5,	/* made in user space from /proc; never from BPF */
};

/* oom_check: verdict bits */
#define VERDICT_ORPHANS		0x0001	/* orphans << shift > tcp_max_orphans */
#define VERDICT_MEMORY		0x0002	/* wmem_queued > SOCK_MIN_SNDBUF && allocated > tcp_mem[2] */
#define VERDICT_KILLED		0x0004	/* tcp_check_oom returned true */
#define VERDICT_RESET		0x0008	/* a reset was sent to the peer */
#define VERDICT_SHIFT_MIN	0x0010	/* shift is a lower bound (a term was not visible) */
/* mem_exceed: which side was refused (the kernel's SK_MEM_SEND / SK_MEM_RECV) */
#define VERDICT_SEND		0x0100
#define VERDICT_RECV		0x0200
/* pressure */
#define VERDICT_ENTER		0x1000
#define VERDICT_LEAVE		0x2000
/* pressure enter: memory_allocated at the call against tcp_mem[1] (function tiers) */
#define VERDICT_CAUSE_LIMIT	0x4000	/* above it: the limit */
#define VERDICT_CAUSE_ALLOC	0x8000	/* at or below: a page or skb allocation failed */
/* mem_drop: where the segment was dropped (one of four), and why */
#define VERDICT_DROP_RCVQ	0x0020	/* PROTO_MEM in tcp_data_queue: TcpExt TCPRcvQDrop */
#define VERDICT_DROP_OFO	0x0040	/* PROTO_MEM in tcp_data_queue_ofo: TcpExt TCPOFODrop */
#define VERDICT_DROP_PRUNE	0x0080	/* TCP_OFO_QUEUE_PRUNE: queued out-of-order data thrown away */
#define VERDICT_DROP_BACKLOG	0x0400	/* SOCKET_BACKLOG in tcp_add_backlog: TcpExt TCPBacklogDrop */
#define VERDICT_DROP_RCVBUF	0x0800	/* rmem_alloc + len above sk_rcvbuf: a full receive buffer,
					 * not a refusal of TCP memory (mem_class says which) */

/* oom_check: which path asked */
enum tcpoom_caller {
	CALLER_UNKNOWN = 0,
	CALLER_CLOSE = 1,	/* tcp_close/__tcp_close, always shift 0 */
	CALLER_TIMER = 2,	/* tcp_out_of_resources, from the retransmit or probe timer */
};

/* Field bits, for the `exact` and `derived` masks of each record. A field in
 * neither mask is unavailable at this method and reads -1 (user space may fill
 * it from /proc as a sampled value). */
#define FIELD_SHIFT		(1u << 0)
#define FIELD_ORPHANS		(1u << 1)
#define FIELD_MAX_ORPHANS	(1u << 2)
#define FIELD_MEMORY		(1u << 3)	/* memory_allocated */
#define FIELD_TCP_MEM		(1u << 4)
#define FIELD_TW_COUNT		(1u << 5)
#define FIELD_MAX_TW		(1u << 6)
#define FIELD_VERDICT		(1u << 7)
#define FIELD_CALLER		(1u << 8)
#define FIELD_SOCKET		(1u << 9)	/* 4-tuple, state, queues */
#define FIELD_PRESSURE		(1u << 10)	/* pressure_since */
#define FIELD_MEM_CLASS		(1u << 11)	/* mem_exceed: mem_class, memcg_usage/limit */
#define FIELD_OWNER		(1u << 12)	/* owner_* (fidelity in owner_fidelity) */

/* owner_fidelity: how the socket's owner was known (bpf/owner.bpf.h) */
enum tcpoom_owner_fidelity {
	OWNER_NONE = 0,
	OWNER_EXACT = 1,	/* the noted owner is the task running the event */
	OWNER_LAST_KNOWN = 2,	/* the task that last used the socket in process context */
	OWNER_CONTEXT = 3,	/* nothing noted: the context task stands in */
};

/* mem_class: why __sk_mem_raise_allocated refused (bpf/mem_class.bpf.h) */
enum tcpoom_mem_class {
	MEM_CLASS_UNKNOWN = 0,
	MEM_CLASS_MEMCG = 1,		/* the memory cgroup's charge failed */
	MEM_CLASS_FAIR_SHARE = 2,	/* under pressure, above tcp_mem[2]/sockets */
	MEM_CLASS_HARD = 3,		/* allocated > tcp_mem[2] */
};

struct tcpoom_event {
	/* common to every family */
	__u64 ts_ns;		/* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 skaddr;		/* kernel address of the socket: correlation only */
	__u32 netns;		/* inode of the socket's network namespace */
	__u32 pid;		/* tgid of the context; a softirq borrows the task it interrupted */
	__u32 tid;
	__u16 cpu;
	__u8 family;		/* enum tcpoom_family */
	__u8 method;		/* enum tcpoom_method */
	char comm[TCPOOM_COMM_LEN];
	__u16 af;		/* AF_INET or AF_INET6 */
	__u16 sport;		/* host byte order */
	__u16 dport;		/* host byte order */
	__u8 state;		/* TCP state; tw_overflow: the state it closed from */
	__u8 caller;		/* oom_check: enum tcpoom_caller */
	__u8 saddr[16];		/* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	/* family figures, -1 where unavailable */
	__s64 memory_allocated;	/* pages charged to TCP, the figure compared with tcp_mem */
	__s64 tcp_mem[3];	/* pages: low, pressure, high */
	__s64 pressure_since;	/* jiffies TCP entered pressure, 0 when not under pressure */
	__s32 orphans;		/* orphan count the decision compared */
	__s32 max_orphans;	/* tcp_max_orphans */
	__s32 shift;		/* oom_check: orphans << shift is compared with the limit */
	__s32 wmem_queued;	/* bytes */
	__s32 rmem_alloc;	/* bytes */
	__s32 sndbuf;
	__s32 rcvbuf;
	__s32 tw_count;		/* TIME_WAIT sockets in the namespace's death row */
	__s32 max_tw_buckets;	/* tcp_max_tw_buckets of that namespace */
	__u16 verdict;		/* VERDICT_* bits */
	__u16 reason;		/* tcp_send_reset reason (numeric, kernel's own enum), or 0 */
	__u32 exact;		/* FIELD_* read in the kernel at the moment of the event */
	__u32 derived;		/* FIELD_* inferred from exact fields */
	/* who: the socket's owner and cgroups (issue 14); cgroup ids are the
	 * inode numbers of cgroup directories, 0 where unknown */
	__u64 sk_cgroup;	/* the socket's cgroup v2 id (sk_cgrp_data) */
	__u64 memcg;		/* the socket's memory cgroup (sk_memcg); v1 memory hierarchy on hybrid hosts */
	__u64 owner_cgroup;	/* cgroup v2 id of the owner when it was noted */
	__u64 cgroup;		/* cgroup v2 id of the context task */
	__s64 memcg_usage;	/* mem_exceed: pages charged at the memcg level nearest its limit, -1 */
	__s64 memcg_limit;	/* its limit, pages; -1 for none */
	__u32 owner_pid;	/* tgid of the owner (see owner_fidelity) */
	__u32 owner_uid;
	__u32 sk_uid;		/* the socket's uid (sk_uid) */
	__u8 owner_fidelity;	/* enum tcpoom_owner_fidelity */
	__u8 mem_class;		/* mem_exceed: enum tcpoom_mem_class */
	__u16 spare;
	char owner_comm[TCPOOM_COMM_LEN];
};

/* Per-CPU counters, one slot each; they count every event whatever the ring
 * buffer does, so the totals stay exact under a storm. */
enum tcpoom_counter {
	CNT_OOM_CHECK = 0,	/* oom_check events (sockets killed) that passed the filters */
	CNT_OOM_ORPHANS,
	CNT_OOM_MEMORY,
	CNT_OOM_CLOSE,
	CNT_OOM_TIMER,
	CNT_OOM_RESET,
	CNT_OOM_CALLS,		/* function tiers: every tcp_check_oom call, killed or not */
	CNT_TW_OVERFLOW,	/* tracepoint tier: once confirmed */
	CNT_TW_CLOSES,		/* tracepoint tier: closes from FIN_WAIT/CLOSING examined */
	CNT_MEM_EXCEED,
	CNT_MEM_SEND,
	CNT_MEM_RECV,
	CNT_PRESSURE_ENTER,
	CNT_PRESSURE_LEAVE,
	CNT_FILTERED,		/* events outside --netns/--pid/--port */
	CNT_LOST_BASE = 16,	/* + family: ring buffer reservation failed */
	/* tw_overflow, tracepoint tier: closes that looked like overflows, those a
	 * reset or an error on the socket cancelled, those confirmed at once
	 * because the pending table was full */
	CNT_TW_CANDIDATES = 24,
	CNT_TW_CANCELLED = 25,
	CNT_TW_UNCHECKED = 26,
	/* + family (1..4, so slots 28..31): kprobe tiers: an event's return found
	 * no entry (a nested call on the same task and CPU took it) */
	CNT_UNPAIRED_BASE = 27,
	/* mem_drop (slot 32 is unpaired + 5, never used: no kprobe tier): the
	 * family's count (PROTO_MEM and SOCKET_BACKLOG drops, one each per
	 * TCPRcvQDrop, TCPOFODrop, TCPBacklogDrop), then by site */
	CNT_MEM_DROP = 33,
	CNT_DROP_RCVQ = 34,
	CNT_DROP_OFO = 35,
	CNT_DROP_BACKLOG = 36,
	CNT_DROP_PRUNE = 37,		/* skbs pruned: OfoPruned counts calls, not skbs */
	CNT_DROP_UNSPLIT = 38,		/* PROTO_MEM without rx_sk (before 6.11): rcvq or ofo unknown */
	CNT_MAX = 40,
};

/* tw_overflow, tracepoint tier: a candidate with no reset or error on its
 * socket for this long is an overflow (the cancels follow within the same
 * softirq or system call). */
#define TW_SETTLE_MS 200

struct tcpoom_counters {
	__u64 slot[CNT_MAX];
};

#endif /* __TCPOOM_H */
