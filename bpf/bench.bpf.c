// SPDX-License-Identifier: GPL-2.0
/*
 * A synthetic event source for benchmarks (scripts/bench_*.py), never part of
 * a probe plan: each getpid() of the benchmark driver makes bench_batch
 * records of the real layout, so the user-space pipeline can be driven at
 * millions of events per second on demand. They go through the same counters
 * and ring buffer as real events: an object of its own, loaded only for
 * --synthetic-pid, whose events and counters maps the loader points at the
 * production object's (bpf_map__reuse_fd) before load.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 bench_tgid = 0;
const volatile __u32 bench_batch = 1000;

static long bench_one(__u32 i, void *ctx)
{
	struct tcpoom_event *e = ctx;

	e->ts_ns = bpf_ktime_get_ns();
	e->shift = i & 3;
	e->orphans = i & 1023;
	e->sport = 1024 + (i & 4095);
	count(CNT_OOM_CHECK);
	emit(e);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_sys_enter, struct pt_regs *regs, long id)
{
	struct tcpoom_event e;

	if (id != 39 /* __NR_getpid, x86_64 */ || (bpf_get_current_pid_tgid() >> 32) != bench_tgid)
		return 0;
	init_event(&e, FAMILY_OOM_CHECK, METHOD_TP_BTF);
	e.af = AF_INET;
	e.dport = 5000;
	e.max_orphans = 1024;
	e.memory_allocated = 1000;
	e.tcp_mem[0] = 100;
	e.tcp_mem[1] = 200;
	e.tcp_mem[2] = 400;
	e.verdict = VERDICT_ORPHANS | VERDICT_KILLED;
	e.caller = CALLER_TIMER;
	bpf_loop(bench_batch, bench_one, &e, 0);
	return 0;
}

/*
 * The same synthetic records through a perf event array, one
 * bpf_perf_event_output() each, as bcc's tools emit theirs: the reference
 * pipeline of the benchmarks (scripts/bench_reference.py reads it with a
 * Python callback per event). Never part of a probe plan.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} bench_perf SEC(".maps");

struct bench_perf_ctx {
	void *prog_ctx;
	struct tcpoom_event e;
};

static long bench_perf_one(__u32 i, void *ctx)
{
	struct bench_perf_ctx *c = ctx;

	c->e.ts_ns = bpf_ktime_get_ns();
	c->e.shift = i & 3;
	c->e.orphans = i & 1023;
	c->e.sport = 1024 + (i & 4095);
	count(CNT_OOM_CHECK);
	if (bpf_perf_event_output(c->prog_ctx, &bench_perf, BPF_F_CURRENT_CPU, &c->e, sizeof(c->e)))
		count(CNT_LOST_BASE + FAMILY_OOM_CHECK);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_perf_sys_enter, struct pt_regs *regs, long id)
{
	struct bench_perf_ctx c = { .prog_ctx = ctx };

	if (id != 39 /* __NR_getpid, x86_64 */ || (bpf_get_current_pid_tgid() >> 32) != bench_tgid)
		return 0;
	init_event(&c.e, FAMILY_OOM_CHECK, METHOD_TP_BTF);
	c.e.af = AF_INET;
	c.e.dport = 5000;
	c.e.max_orphans = 1024;
	c.e.memory_allocated = 1000;
	c.e.tcp_mem[0] = 100;
	c.e.tcp_mem[1] = 200;
	c.e.tcp_mem[2] = 400;
	c.e.verdict = VERDICT_ORPHANS | VERDICT_KILLED;
	c.e.caller = CALLER_TIMER;
	bpf_loop(bench_batch, bench_perf_one, &c, 0);
	return 0;
}
