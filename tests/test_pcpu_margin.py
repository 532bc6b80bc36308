"""The per-CPU margin of the global TCP memory figure (issue 13, finding 7):
none before 6.0, 1 MiB a CPU on 6.0-6.8, net.core.mem_pcpu_rsv from 6.9; shown
by doctor and reports."""
from tracer.analysis import doctor as rules
from tracer.host import pcpu_margin


def test_exact_before_60():
    assert pcpu_margin.margin("5.15.0-91-generic", 4096, cpus=8) is None


def test_one_mib_a_cpu_on_60_to_68(tmp_path):
    m = pcpu_margin.margin("6.1.0-13-amd64", 4096, cpus=8, rsv_path=str(tmp_path / "absent"))
    assert m["rsv_pages"] == 256 and m["pages"] == 2048
    assert "6.0-6.8" in m["source"]
    # the sysctl is not read before 6.9 even where a file exists
    (tmp_path / "rsv").write_text("1024\n")
    assert pcpu_margin.margin("6.8.0", 4096, cpus=2, rsv_path=str(tmp_path / "rsv"))["rsv_pages"] == 256


def test_the_sysctl_from_69(tmp_path):
    (tmp_path / "rsv").write_text("1024\n")
    m = pcpu_margin.margin("6.12.0", 4096, cpus=4, rsv_path=str(tmp_path / "rsv"))
    assert m["pages"] == 4096 and "mem_pcpu_rsv = 1024" in m["source"]


def test_possible_cpu_ranges(tmp_path):
    p = tmp_path / "possible"
    p.write_text("0-3,8-11\n")
    assert pcpu_margin.possible_cpus(str(p)) == 8
    p.write_text("0\n")
    assert pcpu_margin.possible_cpus(str(p)) == 1


def test_doctor_shows_the_margin_next_to_tcp_memory():
    fig = rules.Figures(mem_pages=900, tcp_mem=(500, 800, 1000),
                        mem_margin={"cpus": 2, "rsv_pages": 256, "pages": 512, "source": "x"})
    f = next(f for f in rules.diagnose(fig).findings if f["id"] == "tcp_mem")
    assert any("± 512 pages (2.0 MiB): 2 CPUs x 256 pages" in e for e in f["evidence"])


def test_report_shows_the_recorded_margin():
    from tracer.analysis.report import _memory_margin
    from tracer.model.aggregate import Aggregate
    agg = Aggregate({})
    agg.header = {"page_size": 4096, "pcpu_margin": {"cpus": 2, "rsv_pages": 256, "pages": 512,
                                                      "source": "SK_MEMORY_PCPU_RESERVE"}}
    m = _memory_margin(agg)
    assert m["pages"] == 512 and m["text"].startswith("± 512 pages")
    agg.header = {"page_size": 4096}        # recorded before the field, or a pre-6.0 kernel
    assert _memory_margin(agg) is None
