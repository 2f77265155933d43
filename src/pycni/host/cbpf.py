"""Classic BPF, the socket-filter language cls_bpf runs: the opcodes pycni's programs use (linux/filter.h)
and an assembler with labels. The programs themselves live with what uses them (the bandwidth plugin's
flow classifier)."""

from __future__ import annotations

from typing import Any

Step = tuple[Any, ...]  # (code, k), (code, k, label if true, label if false), or ("label", name)
Program = tuple[tuple[int, int, int, int], ...]  # sock_filter entries: code, jump if true, jump if false, k

# classic BPF opcodes (linux/filter.h): loads, jumps, ALU, returns
LDH_ABS, LDB_ABS, LDH_IND, LDX_MSH, LDX_MEM, ST = 0x28, 0x30, 0x48, 0xB1, 0x61, 0x02
JEQ, JSET, JA, XOR_X, RSH_K, AND_K, ADD_K, TAX, RET_K, RET_A = \
    0x15, 0x45, 0x05, 0xAC, 0x74, 0x54, 0x04, 0x07, 0x06, 0x16


def assemble(program: list[Step]) -> Program:
    """Classic BPF from (code, k) and (code, k, label if true, label if false) steps and ("label", name) marks."""
    labels: dict[str, int] = {}
    steps: list[Step] = []
    for step in program:
        if step[0] == "label":
            labels[step[1]] = len(steps)
        else:
            steps.append(step)
    out = []
    for at, step in enumerate(steps):
        if step[0] == JA:  # an unconditional jump: its offset is k
            out.append((step[0], 0, 0, labels[step[2]] - at - 1))
        elif len(step) == 4:
            code, k, if_true, if_false = step
            out.append((code, labels[if_true] - at - 1 if if_true else 0, labels[if_false] - at - 1 if if_false else 0,
                        k))
        else:
            out.append((step[0], 0, 0, step[1]))
    return tuple(out)
