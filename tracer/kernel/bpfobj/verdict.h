/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tcpoom: the kernel logic both engines share, written once. Included by the
 * CO-RE object (bpf/tcpoom.bpf.c) and by the bcc engine's text
 * (bpf/tcpoom_bcc.c, compiled on the traced host), so it holds pure C on
 * values already read: no CO-RE relocation, no bcc rewrite, no kernel struct.
 * Only the BPF helpers both toolchains declare under the same names
 * (bpf_get_current_pid_tgid, bpf_ktime_get_ns, ...) are called.
 */
#ifndef __TCPOOM_VERDICT_H
#define __TCPOOM_VERDICT_H

#include "tcpoom.h"

/* tid -> socket being closed by tcp_close()/__tcp_close(): tells tcp_check_oom's
 * close-path calls from the timer path's (the close path runs in the closing
 * task's context), and whether that close's tcp_check_oom call was seen. */
struct closing_sk {
	__u64 sk;
	__u32 oom_seen;	/* tcp_check_oom was called out of line for this close */
	__u32 pad;
};

/* Entry -> return hand-offs are keyed by task and CPU. Softirqs on idle CPUs
 * all run on pid 0, so a key of pid_tgid alone lets one CPU's return take
 * another CPU's entry (issue 13, finding 2). A softirq or timer does not
 * migrate; a process-context call with BH enabled could, and then shows as a
 * return without its entry (counted, CNT_UNPAIRED_BASE). */
struct entry_key {
	__u32 tid;
	__u32 cpu;
};

static __always_inline struct entry_key entry_key_now(void)
{
	struct entry_key k = { .tid = (__u32)bpf_get_current_pid_tgid(),
			       .cpu = bpf_get_smp_processor_id() };

	return k;
}

/* kprobe tiers: arguments saved at entry for the return probe. */
struct entry_args {
	__u64 sk;
	__u64 arg;	/* tcp_check_oom: shift; inet_twsk_alloc: death row */
};

/* The orphan figures as tcp_check_oom() found them, read on entry: by its
 * return another CPU's 100 ms refresh may already have replaced the cached
 * count (orphans die in bulk when the limit bites). */
struct oom_inputs {
	__s32 orphans;
	__s32 max_orphans;
	__u32 exact;
	__u32 derived;
	/* memory_allocated and tcp_mem next to the orphan count: the figures
	 * tcp_out_of_memory() compares, read before the decision (finding 7) */
	__s64 memory_allocated;
	__s64 tcp_mem[3];
	__s64 pressure_since;
};

/* One per-CPU counter slot up by one (c: this CPU's counters, or NULL). */
static __always_inline void tally(struct tcpoom_counters *c, __u32 slot)
{
	if (c && slot < CNT_MAX)
		__sync_fetch_and_add(&c->slot[slot], 1);
}

/* Events are built on the stack and copied into the ring buffer: a failed
 * copy costs the detail only, never the count (counters are bumped before).
 * Every family figure starts unavailable (-1). */
static __always_inline void init_event(struct tcpoom_event *e, __u8 family, __u8 method)
{
	__u64 id;

	__builtin_memset(e, 0, sizeof(*e));
	id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->cpu = bpf_get_smp_processor_id();
	e->family = family;
	e->method = method;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->memory_allocated = -1;
	e->tcp_mem[0] = e->tcp_mem[1] = e->tcp_mem[2] = -1;
	e->pressure_since = -1;
	e->orphans = e->max_orphans = e->shift = -1;
	e->wmem_queued = e->rmem_alloc = e->sndbuf = e->rcvbuf = -1;
	e->tw_count = e->max_tw_buckets = -1;
}

/* memory_allocated against tcp_mem, from the three pointers of the socket's
 * struct proto (the engine reads them: CO-RE or the kernel's headers).
 * `allocated` is the atomic_long_t itself: its one member, the counter, is
 * at its start. From
 * 6.0 the global figure leaves out a per-CPU residue (per_cpu_fw_alloc),
 * exactly as the kernel's own comparison does. */
static __always_inline void read_memory(struct tcpoom_event *e, const void *allocated,
					const void *mem, const void *pressure)
{
	long v = 0;

	if (allocated && !bpf_probe_read_kernel(&v, sizeof(v), allocated)) {
		e->memory_allocated = v < 0 ? 0 : v;
		e->exact |= FIELD_MEMORY;
	}
	if (mem && !bpf_probe_read_kernel(e->tcp_mem, sizeof(e->tcp_mem), mem))
		e->exact |= FIELD_TCP_MEM;
	/* 4.13+: jiffies when pressure began, 0 when not under pressure. */
	if (pressure && !bpf_probe_read_kernel(&v, sizeof(v), pressure)) {
		e->pressure_since = v;
		e->exact |= FIELD_PRESSURE;
	}
}

/* The orphan limit and count at the addresses /proc/kallsyms gave
 * (CONFIG_KALLSYMS_ALL; 0: not listed). True when the count was read: from
 * 5.15.16/6.0 tcp_too_many_orphans() compares this 100 ms cache of the
 * per-CPU tcp_orphan_count sums, so it is the exact figure of the decision;
 * before, the engine reads the percpu_counter itself. */
static __always_inline bool read_orphans(struct tcpoom_event *e, __u64 max_orphans_at,
					 __u64 orphan_cache_at)
{
	int v;

	if (max_orphans_at && !bpf_probe_read_kernel(&v, sizeof(v), (void *)max_orphans_at)) {
		e->max_orphans = v;
		e->exact |= FIELD_MAX_ORPHANS;
	}
	if (orphan_cache_at && !bpf_probe_read_kernel(&v, sizeof(v), (void *)orphan_cache_at)) {
		e->orphans = v;
		e->exact |= FIELD_ORPHANS;
		return true;
	}
	return false;
}

/* ---------------------------------------------------------------- oom_check */

/* The orphan figures of an event (read by the engine's fill_orphans), kept
 * at tcp_check_oom's entry for its return. */
static __always_inline void keep_oom_inputs(struct oom_inputs *in, const struct tcpoom_event *e)
{
	in->orphans = e->orphans;
	in->max_orphans = e->max_orphans;
	in->exact = e->exact;
	in->derived = e->derived;
	in->memory_allocated = e->memory_allocated;
	in->tcp_mem[0] = e->tcp_mem[0];
	in->tcp_mem[1] = e->tcp_mem[1];
	in->tcp_mem[2] = e->tcp_mem[2];
	in->pressure_since = e->pressure_since;
}

static __always_inline void use_oom_inputs(struct tcpoom_event *e, const struct oom_inputs *in)
{
	e->orphans = in->orphans;
	e->max_orphans = in->max_orphans;
	e->exact |= in->exact & (FIELD_ORPHANS | FIELD_MAX_ORPHANS);
	e->derived |= in->derived & (FIELD_ORPHANS | FIELD_MAX_ORPHANS);
	if (in->exact & FIELD_MEMORY)
		e->memory_allocated = in->memory_allocated;
	if (in->exact & FIELD_TCP_MEM) {
		e->tcp_mem[0] = in->tcp_mem[0];
		e->tcp_mem[1] = in->tcp_mem[1];
		e->tcp_mem[2] = in->tcp_mem[2];
	}
	if (in->exact & FIELD_PRESSURE)
		e->pressure_since = in->pressure_since;
}

/* tcp_out_of_memory(): the memory half of the verdict, from exact reads.
 * min_sndbuf: SOCK_MIN_SNDBUF of the running kernel. */
static __always_inline bool out_of_memory(const struct tcpoom_event *e, int min_sndbuf)
{
	return e->wmem_queued > min_sndbuf && e->memory_allocated >= 0 &&
	       e->tcp_mem[2] >= 0 && e->memory_allocated > e->tcp_mem[2];
}

/* Fill the verdict of a kill decision. With the orphan count known both
 * halves are recomputed; without it, the orphan half is implied when the
 * memory half is false (the kernel said yes to one of the two). */
static __always_inline void fill_verdict(struct tcpoom_event *e, int min_sndbuf)
{
	e->verdict |= VERDICT_KILLED;
	if (out_of_memory(e, min_sndbuf))
		e->verdict |= VERDICT_MEMORY;
	if (e->orphans >= 0 && e->max_orphans >= 0 && e->shift >= 0) {
		if (((__s64)e->orphans << e->shift) > e->max_orphans)
			e->verdict |= VERDICT_ORPHANS;
	} else if (!(e->verdict & VERDICT_MEMORY)) {
		e->verdict |= VERDICT_ORPHANS;
	}
	e->derived |= FIELD_VERDICT;
}

/* A kill decision seen at tcp_check_oom (shift and caller exact), or
 * `inferred` at the close path's reset where tcp_check_oom was inlined
 * (shift by construction), then its verdict. */
static __always_inline void decide_oom(struct tcpoom_event *e, int shift, __u8 caller,
				       bool inferred, int min_sndbuf)
{
	e->shift = shift;
	e->caller = caller;
	if (inferred) {
		e->verdict |= VERDICT_RESET;
		e->derived |= FIELD_SHIFT;
		e->exact |= FIELD_CALLER;
	} else {
		e->exact |= FIELD_SHIFT | FIELD_CALLER;
	}
	fill_verdict(e, min_sndbuf);
}

static __always_inline void tally_oom(struct tcpoom_counters *c, const struct tcpoom_event *e)
{
	tally(c, CNT_OOM_CHECK);
	if (e->verdict & VERDICT_ORPHANS)
		tally(c, CNT_OOM_ORPHANS);
	if (e->verdict & VERDICT_MEMORY)
		tally(c, CNT_OOM_MEMORY);
	if (e->caller == CALLER_CLOSE)
		tally(c, CNT_OOM_CLOSE);
	else if (e->caller == CALLER_TIMER)
		tally(c, CNT_OOM_TIMER);
	if (e->verdict & VERDICT_RESET)
		tally(c, CNT_OOM_RESET);
}

/* -------------------------------------------------------------- tw_overflow */

/* The namespace's death row as the engine read it: TIME_WAIT count and limit.
 * `inferred`: no bucket refusal was seen, the tracepoint tier deduced it. */
static __always_inline void mark_tw_overflow(struct tcpoom_event *e, int tw_count, int max_tw,
					     bool inferred)
{
	e->tw_count = tw_count;
	e->max_tw_buckets = max_tw;
	e->exact |= FIELD_TW_COUNT | FIELD_MAX_TW;
	if (inferred)
		e->derived |= FIELD_VERDICT;
	else
		e->exact |= FIELD_VERDICT;
}

/* --------------------------------------------------------------- mem_exceed */

/* __sk_mem_raise_allocated() refused an allocation: `kind` SK_MEM_SEND 0 /
 * SK_MEM_RECV 1 (4.19+). */
static __always_inline void tally_exceed(struct tcpoom_counters *c, int kind)
{
	tally(c, CNT_MEM_EXCEED);
	tally(c, kind ? CNT_MEM_RECV : CNT_MEM_SEND);
}

/* The tracepoint's own figure: what the allocation would have made it. */
static __always_inline void mark_exceed(struct tcpoom_event *e, long allocated, int kind)
{
	e->memory_allocated = allocated;
	e->verdict = kind ? VERDICT_RECV : VERDICT_SEND;
	e->exact |= FIELD_MEMORY | FIELD_VERDICT;
}

/* ----------------------------------------------------------------- pressure */

/* tcp_enter_memory_pressure() runs on every allocation above tcp_mem[1] but
 * only the first enters (cmpxchg 0 -> jiffies, 4.13+); likewise leave below
 * tcp_mem[0]. `since`: the flag as read at the call. */
static __always_inline bool pressure_changes(const unsigned long *flag, bool enter,
					     unsigned long *since)
{
	*since = 0;
	if (!flag || bpf_probe_read_kernel(since, sizeof(*since), flag))
		return false;
	return enter ? *since == 0 : *since != 0;
}

static __always_inline void mark_pressure(struct tcpoom_event *e, unsigned long since, bool enter)
{
	e->pressure_since = since;
	e->verdict = enter ? VERDICT_ENTER : VERDICT_LEAVE;
	e->exact |= FIELD_VERDICT;
}

/*
 * One report per episode (finding 8). Two CPUs can both read the flag 0 and
 * call cmpxchg; one wins, both used to report ENTER. The function tiers now
 * note a call that found the flag 0 (enter) at its entry, and at its return
 * insert the value the flag then holds into `episodes` with BPF_NOEXIST: a
 * hash insert is atomic under its bucket lock, so exactly one racer reports.
 * Leave: every call that finds the flag set will see it cleared by itself or a
 * racer (xchg), so the entry inserts value | PRESSURE_LEFT, once.
 */
#define PRESSURE_LEFT (1ULL << 63)

/* A tcp_enter_memory_pressure() call that found the flag 0, from entry to return. */
struct pressure_call {
	__u64 sk;		/* the caller's socket (a kretprobe has no arguments) */
	__s64 allocated;	/* memory_allocated at the call, pages */
	__s64 tcp_mem1;		/* tcp_mem[1] at the call */
};

/* Why TCP entered pressure: __sk_mem_raise_allocated() calls it above tcp_mem[1];
 * sk_page_frag_refill() and tcp_stream_alloc_skb() when an allocation fails,
 * whatever the usage (and MPTCP through its own hook). The global figure can
 * lag the caller's by the per-CPU reserves (6.0+), so the cause is derived. */
static __always_inline void mark_pressure_cause(struct tcpoom_event *e, const struct pressure_call *c)
{
	if (c->allocated < 0 || c->tcp_mem1 < 0)
		return;
	e->verdict |= c->allocated > c->tcp_mem1 ? VERDICT_CAUSE_LIMIT : VERDICT_CAUSE_ALLOC;
	e->memory_allocated = c->allocated;
}

#endif /* __TCPOOM_VERDICT_H */
