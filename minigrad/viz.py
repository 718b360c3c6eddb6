"""A picture of the graph behind a tensor, as Graphviz DOT text.

    print(minigrad.viz.to_dot(loss))      # then: dot -Tsvg graph.dot > graph.svg

Tensors are boxes (shape, dtype; filled when they require grad), ops are ellipses named after
their Function class. Rendering is left to Graphviz's `dot`; nothing here draws.
"""


def to_dot(tensor, name="minigrad"):
    """DOT text of every tensor and op that produced `tensor`, inputs pointing to outputs."""
    lines = [f"digraph {name} {{", "  rankdir=BT;", '  node [fontname="monospace", fontsize=10];']
    seen, stack = set(), [tensor]
    while stack:  # iterative walk: a long chain must not hit Python's recursion limit
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        label = f"{t.name + ' ' if t.name else ''}{tuple(t.shape)} {t.dtype}"
        style = ', style=filled, fillcolor="#dde8f7"' if t.requires_grad else ""
        lines.append(f'  t{id(t)} [shape=box, label="{label}"{style}];')
        node = t._node
        if node is None:
            continue
        lines.append(f'  op{id(t)} [shape=ellipse, label="{node.fn.__name__}"];')
        lines.append(f"  op{id(t)} -> t{id(t)};")
        for parent in node.inputs:
            lines.append(f"  t{id(parent)} -> op{id(t)};")
            stack.append(parent)
    lines.append("}")
    return "\n".join(lines) + "\n"
