"""Show the probe plan: per event family, the attach method this kernel allows,
the fidelity of every field, and why each better method was rejected.
Attaches nothing.

\b
Examples:
  tcpoom probes                        # this kernel's plan
  tcpoom probes --engine bcc --json    # as JSON, for the bcc engine"""
from __future__ import annotations

import json

import click

from tracer.kernel import facts as kernel_facts, plan as plan_mod
from tracer.model.families import FAMILY_ORDER
from .options import engine_option


def render(p: plan_mod.Plan) -> str:
    out = [f"kernel {p.kernel}, engine {p.engine}"]
    for note in p.notes:
        out.append(f"note: {note}")
    for name in FAMILY_ORDER:
        fp = p.families[name]
        out.append("")
        out.append(f"{name}: {fp.method} {fp.target}")
        for method, reason in fp.rejected:
            out.append(f"  rejected {method}: {reason}")
        for field, (fidelity, how) in fp.fields.items():
            out.append(f"  {field:<17} {fidelity:<11} {how}")
        if fp.blind_spot:
            out.append(f"  blind spot: {fp.blind_spot}")
    if p.owner:
        o = p.owner
        out.append("")
        out.append(f"owner: {o.get('fidelity')} (store {o.get('store')}: {', '.join(o.get('programs', [])) or '-'})")
        out.append(f"  {o.get('how', '')}")
        if o.get("cgroups"):
            out.append(f"  {o['cgroups']}")
        if o.get("blind_spot"):
            out.append(f"  blind spot: {o['blind_spot']}")
    return "\n".join(out)


@click.command(help=__doc__, short_help='The probe plan for this kernel; attaches nothing.')
@click.option("--json", "as_json", is_flag=True, help="Print the plan and the kernel facts as JSON.")
@click.option("--facts", type=click.Path(exists=True, dir_okay=False),
              help="Plan from recorded kernel facts (JSON) instead of this kernel.")
@engine_option()
def probes(as_json: bool, facts: str, engine: str) -> None:
    f = kernel_facts.KernelFacts.load(facts) if facts else kernel_facts.gather()
    p = plan_mod.build(f, engine=plan_mod.choose_engine(f, engine))
    if as_json:
        click.echo(json.dumps({"plan": p.to_json(), "facts": f.to_json()}, indent=2))
    else:
        click.echo(render(p))
