"""What the running kernel allows (its facts, the probe plan) and loading the BPF
programs there (libbpf, the CO-RE loader and its preload, the bcc engine, the ring buffer)."""
