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
	__type(key, __u64);
	__type(value, struct entry_args);
} entry SEC(".maps");

#endif /* __TCPOOM_HANDOFF_BPF_H */
