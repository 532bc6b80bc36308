"""tcpoom: a BPF tracer for Linux TCP socket-memory trouble."""

#: the one version: pyproject.toml reads it (dynamic), `tcpoom --version`,
#: recordings' headers, scripts/build-deb and scripts/build-pyz use it
__version__ = "0.1.0"
