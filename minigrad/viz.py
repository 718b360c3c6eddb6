"""A picture of the graph behind a tensor, as Graphviz DOT text.

    print(minigrad.viz.to_dot(loss))      # then: dot -Tsvg graph.dot > graph.svg

Tensors are boxes (shape, dtype; filled when they require grad), ops are ellipses named after
their Function class. Rendering is left to Graphviz's `dot`; nothing here draws.
"""


def to_dot(tensor, name="minigrad"):
    """DOT text of every tensor and op that produced `tensor`, inputs pointing to outputs."""
    from .function import Node, graph_nodes

    def quoted(text):  # a DOT string: backslashes and quotes escaped
        return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {quoted(name)} {{", "  rankdir=BT;",
             '  node [fontname="monospace", fontsize=10];']

    def box(key, label_name, shape, dtype, requires_grad):
        label = f"{label_name + ' ' if label_name else ''}{tuple(shape)} {dtype}"
        style = ', style=filled, fillcolor="#dde8f7"' if requires_grad else ""
        lines.append(f"  t{key} [shape=box, label={quoted(label)}{style}];")

    if tensor._node is None:
        box(id(tensor), tensor.name, tensor.shape, tensor.dtype, tensor.requires_grad)
    else:  # the output of each node is drawn as a box keyed by the node
        box(id(tensor._node), tensor.name, tensor.shape, tensor.dtype, True)
        leaves = set()
        for node in graph_nodes(tensor._node):  # iterative: long chains are fine
            if id(node) != id(tensor._node):
                box(id(node), None, node.shape, node.dtype, True)
            lines.append(f'  op{id(node)} [shape=ellipse, label="{node.fn.__name__}"];')
            lines.append(f"  op{id(node)} -> t{id(node)};")
            for parent in node.parents:
                if not isinstance(parent, Node) and id(parent) not in leaves:
                    leaves.add(id(parent))
                    box(id(parent), parent.name, parent.shape, parent.dtype, parent.requires_grad)
                lines.append(f"  t{id(parent)} -> op{id(node)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
