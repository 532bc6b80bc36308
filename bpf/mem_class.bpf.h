/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Why a socket-memory allocation was refused (issue 13, finding 4).
 *
 * __sk_mem_raise_allocated() refuses for three reasons, in this order on
 * 4.19-6.18 (net/core/sock.c):
 *   1. the memory cgroup charge failed, before any tcp_mem test;
 *   2. allocated > tcp_mem[2], the hard limit;
 *   3. under memory pressure, a socket above its fair share
 *      (tcp_mem[2] / sockets_allocated); on <= 6.6 "pressure" includes the
 *      memcg's own socket pressure (v1 tcpmem_pressure, v2 vmpressure).
 * sock:sock_exceed_buf_limit does not say which. At the tracepoint:
 * - MEMCG when the socket's memcg shows the failed charge: v1
 *   tcpmem_pressure is set by every failed tcpmem charge and cleared by
 *   every successful one; v2 a level of the memcg within MEMCG_SLACK pages of
 *   its memory.max (a GFP_KERNEL charge reclaims first, so a failed one leaves
 *   the cgroup at its limit);
 * - else HARD when allocated > tcp_mem[2];
 * - else FAIR_SHARE when TCP is under pressure;
 * - else MEMCG again, by elimination: neither tcp_mem test can have refused
 *   (a memcg at its limit whose usage we could not see, or memcg socket
 *   pressure on <= 6.6), UNKNOWN for a socket without a memcg.
 * The class is derived (FIELD_MEM_CLASS in `derived`), and so are the memcg
 * figures it rests on.
 */
#ifndef __TCPOOM_MEM_CLASS_BPF_H
#define __TCPOOM_MEM_CLASS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include "tcpoom.h"
#include "owner.bpf.h"

/* pages: a 64 KiB skb, the largest single socket charge in practice */
#define MEMCG_SLACK 16
/* page_counter levels walked up from the socket's memcg */
#define MEMCG_LEVELS 6

static __always_inline bool memcg_refused(struct tcpoom_event *e, struct mem_cgroup *memcg)
{
	struct page_counter *pc;
	bool full = false;
	__s64 best = -1;

	if (!memcg)
		return false;
	if (memcg_v1) {
		long usage = -1;
		unsigned long max = 0;
		int pressure = 0;

		if (!bpf_core_field_exists(memcg->tcpmem))
			return false;
		usage = BPF_CORE_READ(memcg, tcpmem.usage.counter);
		max = BPF_CORE_READ(memcg, tcpmem.max);
		if (bpf_core_field_exists(memcg->tcpmem_pressure))
			pressure = BPF_CORE_READ(memcg, tcpmem_pressure);
		e->memcg_usage = usage;
		e->memcg_limit = max >= (1UL << 50) ? -1 : (__s64)max;
		return pressure || (e->memcg_limit >= 0 && usage + 1 > (__s64)max);
	}
	pc = &memcg->memory;
#pragma unroll
	for (int i = 0; i < MEMCG_LEVELS; i++) {
		long usage = 0;
		unsigned long max = ~0UL;

		if (pc) {
			usage = BPF_CORE_READ(pc, usage.counter);
			max = BPF_CORE_READ(pc, max);
			pc = BPF_CORE_READ(pc, parent);
		}
		if (max < (1UL << 50)) {
			__s64 room = (__s64)max - usage;

			/* report the level with the least room: the one that refuses */
			if (best < 0 || room < best) {
				best = room < 0 ? 0 : room;
				e->memcg_usage = usage;
				e->memcg_limit = max;
			}
			if (usage + MEMCG_SLACK > (__s64)max)
				full = true;
		}
	}
	return full;
}

static __always_inline void classify_refusal(struct tcpoom_event *e, const struct sock *sk,
					     struct proto *prot, long allocated)
{
	unsigned long *flag = BPF_CORE_READ(prot, memory_pressure);
	unsigned long pressure = 0;
	struct mem_cgroup *memcg;

	e->memcg_usage = e->memcg_limit = -1;
	if (flag)
		bpf_probe_read_kernel(&pressure, sizeof(pressure), flag);
	memcg = sk_memcg_of(sk);
	if (memcg_refused(e, memcg))
		e->mem_class = MEM_CLASS_MEMCG;
	else if (e->tcp_mem[2] >= 0 && allocated > e->tcp_mem[2])
		e->mem_class = MEM_CLASS_HARD;
	else if (pressure)
		e->mem_class = MEM_CLASS_FAIR_SHARE;
	else if (memcg)
		e->mem_class = MEM_CLASS_MEMCG;
	else
		e->mem_class = MEM_CLASS_UNKNOWN;	/* nothing left that could refuse */
	e->pressure_since = pressure;
	e->derived |= FIELD_MEM_CLASS;
}

#endif /* __TCPOOM_MEM_CLASS_BPF_H */
