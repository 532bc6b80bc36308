/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps that hand a figure from one program to another across families:
 * oom_check and tw_overflow both include this (the bench object does not).
 */
#ifndef __TCPOOM_HANDOFF_BPF_H
#define __TCPOOM_HANDOFF_BPF_H

#include "common.bpf.h"

/* kprobe tiers of oom_check and tw_overflow: arguments saved at entry for
 * the return probe (struct entry_args: verdict.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct entry_key);
	__type(value, struct entry_args);
} entry SEC(".maps");

/* Save a kprobe's arguments for its return. A slot already taken on this task
 * and CPU means a nested call (a softirq inside the same function): the inner
 * call's arguments win, and the outer return finds none and counts itself
 * (CNT_UNPAIRED_BASE) if it was an event. */
static __always_inline void keep_entry(const struct entry_key *k, const struct entry_args *a)
{
	if (bpf_map_update_elem(&entry, k, a, BPF_NOEXIST))
		bpf_map_update_elem(&entry, k, a, BPF_ANY);
}

#endif /* __TCPOOM_HANDOFF_BPF_H */
