"""The import layering of the project (BUILD.md, "Layout"): no module imports from a layer above
its own, no import circle, and nothing imports a command-line module.

Every import statement of every module is read from its source (module level and inside
functions alike), so a late import cannot hide an upward dependency. The one exception is the
body of `if __name__ == '__main__':`, an entry point that nothing imports (the old
`python -m converters.caffe_npy` entry runs the tool of the top layer from there).
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('converters', 'icnet_tf', 'dff_tf', 'data')

FORMATS, NETWORKS, LIBRARY, FAMILIES, CLI = range(5)
LAYER_NAMES = ('weights formats', 'builder and networks', 'data/metrics/training', 'model '
               'families', 'command line')  # fmt: skip
# Every module has a layer; a new module must be placed here (the test fails until it is).
LAYERS = {
    'converters': FORMATS,
    'converters.errors': FORMATS,
    'converters.budget': FORMATS,
    'converters.keys': FORMATS,
    'converters.caffe_npy': FORMATS,
    'converters.torch_pth': FORMATS,
    'converters.tf_checkpoint': FORMATS,
    'converters.tf1_checkpoint': FORMATS,
    'converters.formats': FORMATS,
    'converters.flownet_keys': FORMATS,
    'converters.mmseg_keys': FORMATS,
    'converters.dff_keys': FORMATS,
    'icnet_tf': NETWORKS,
    'icnet_tf.network': NETWORKS,
    'icnet_tf.weights': NETWORKS,
    'icnet_tf.icnet': NETWORKS,
    'icnet_tf.pspnet': NETWORKS,
    'icnet_tf.models': NETWORKS,
    'dff_tf.flownet': NETWORKS,
    'dff_tf.warp': NETWORKS,
    'icnet_tf.predict': LIBRARY,
    'icnet_tf.palette': LIBRARY,
    'icnet_tf.datasets': LIBRARY,
    'icnet_tf.labels': LIBRARY,
    'icnet_tf.data': LIBRARY,
    'icnet_tf.losses': LIBRARY,
    'icnet_tf.progress': LIBRARY,
    'icnet_tf.metrics': LIBRARY,
    'icnet_tf.training': LIBRARY,
    'icnet_tf.fold': LIBRARY,
    'icnet_tf.rewrites': LIBRARY,
    'icnet_tf.serving': LIBRARY,
    'dff_tf.data': LIBRARY,
    'data': LIBRARY,
    'data.toycity': LIBRARY,
    'dff_tf': FAMILIES,
    'dff_tf.model': FAMILIES,
    'icnet_tf.cli': CLI,
    'icnet_tf.train': CLI,
    'icnet_tf.evaluate': CLI,
    'icnet_tf.inference': CLI,
    'icnet_tf.export': CLI,
    'icnet_tf.convert': CLI,
    'icnet_tf.demo': CLI,
    'dff_tf.cli': CLI,
    'dff_tf.train': CLI,
    'dff_tf.train_flownet': CLI,
    'dff_tf.evaluate': CLI,
    'dff_tf.inference': CLI,
    'dff_tf.export': CLI,
    'data.lists': CLI,
}
# Command-line plumbing that the command-line modules share (flag groups, the error line).
CLI_HELPERS = {'icnet_tf.cli', 'dff_tf.cli'}


def project_modules():
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith('.py'):
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, ROOT)[: -len('.py')].replace(os.sep, '.')
                    found[rel.removesuffix('.__init__')] = path
    return found


def _is_main_guard(node):
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == '__name__'
        and any(isinstance(c, ast.Constant) and c.value == '__main__' for c in test.comparators)
    )


def imports_of(path, modules):
    """Project modules imported anywhere in the file, except under `if __name__ == '__main__'`."""
    tree = ast.parse(open(path, encoding='utf-8').read(), path)
    out = set()

    def visit(node):
        if _is_main_guard(node):
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split('.')[0] in PACKAGES)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split('.')[0] in PACKAGES:
                for alias in node.names:
                    full = f'{node.module}.{alias.name}'
                    out.add(full if full in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


@pytest.fixture(scope='module')
def graph():
    modules = project_modules()
    return {m: imports_of(p, modules) for m, p in modules.items()}


def test_every_module_has_a_layer(graph):
    unplaced = sorted(set(graph) - set(LAYERS))
    assert not unplaced, f'place these modules in LAYERS (and BUILD.md): {unplaced}'


def test_no_module_imports_from_a_layer_above(graph):
    violations = [
        f'{m} ({LAYER_NAMES[LAYERS[m]]}) imports {d} ({LAYER_NAMES[LAYERS[d]]})'
        for m, deps in graph.items()
        for d in deps
        if d in LAYERS and m in LAYERS and LAYERS[d] > LAYERS[m]
    ]
    assert not violations, '\n'.join(violations)


def test_nothing_imports_a_command_line_module(graph):
    violations = [
        f'{m} imports {d}'
        for m, deps in graph.items()
        for d in deps
        if LAYERS.get(d) == CLI and d not in CLI_HELPERS and d != m
    ]
    assert not violations, '\n'.join(violations)


def test_no_import_circle(graph):
    # Tarjan's strongly connected components over the project's import graph.
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    assert not circles, f'import circles: {circles}'


def test_the_checker_finds_a_violation(tmp_path):
    """The walk is able to fail: an upward import and a late import are both seen."""
    path = tmp_path / 'm.py'
    path.write_text(
        'from converters.errors import UserError\n'
        'def f():\n'
        '    from icnet_tf import train\n'
        "if __name__ == '__main__':\n"
        '    from icnet_tf.convert import entry_point\n'
    )
    modules = {'icnet_tf.train': '', 'icnet_tf.convert': ''}
    assert imports_of(str(path), modules) == {'converters.errors', 'icnet_tf.train'}
