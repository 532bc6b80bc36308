"""What the host says without BPF: /proc, network namespaces, the kernel log, socket holders."""
