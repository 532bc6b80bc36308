/* SPDX-License-Identifier: GPL-2.0 */
/*
 * CO-RE shims for kernel layouts older than the pinned vmlinux.h (6.18).
 * Each flavor names the kernel change it covers; libbpf matches a flavor
 * (the part before ___) against the running kernel's BTF by field name and
 * type, so a field that is absent, or of another kind, reads as "does not
 * exist" and the other branch is taken.
 */
#ifndef __TCPOOM_CORE_FIXES_BPF_H
#define __TCPOOM_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/* 4.1-5.17: the death row counted TIME_WAIT sockets in an atomic_t tw_count;
 * 5.19 replaced it with refcount_t tw_refcount, biased by one. */
struct inet_timewait_death_row___old {
	atomic_t tw_count;
	int sysctl_max_tw_buckets;
} __attribute__((preserve_access_index));

/* 5.19 and 6.0: netns_ipv4.tcp_death_row was a pointer; 4.11-5.17 and
 * 6.1 onwards embed the struct. */
struct netns_ipv4___dr_ptr {
	struct inet_timewait_death_row *tcp_death_row;
} __attribute__((preserve_access_index));

struct net___dr_ptr {
	struct netns_ipv4___dr_ptr ipv4;
} __attribute__((preserve_access_index));

/* up to 5.15.0: proto.orphan_count was a struct percpu_counter *; 5.15.16 and
 * 6.0-6.14 a bare per-cpu unsigned int; gone by 6.18. */
struct proto___orphan_pcc {
	struct percpu_counter *orphan_count;
} __attribute__((preserve_access_index));

#endif /* __TCPOOM_CORE_FIXES_BPF_H */
