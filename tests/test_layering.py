"""Dependencies inside ``clvp`` run one way (docs/architecture.md): each module imports only modules of
its own layer or below, at module level. An import inside a function may not dodge a cycle; only
the entry points load parts lazily (``clvp/__init__.py`` keeps ``import clvp`` light, ``cli.py``
keeps ``clvp --help`` fast)."""
import ast

import pytest

from conftest import ROOT

# Lower layers first. A module may import its own layer and the layers before it.
LAYERS = [
    # leaves: kernels, data, configs, outputs, CPU product choices, text and audio parts
    {"kernels", "data", "configuration", "outputs", "products", "normalizer", "audio", "batch", "bpe", "padding",
     "atomic",  # all-or-nothing saves, used by every save_pretrained
     "tokenizer_files", "audio_input", "audio_padding", "mel_filters",
     "encoding"},  # transformers' encoding API (pairs, truncation, pad) over padding's list functions
    {"loading", "tokenization", "feature_extraction", "text_split"},  # text_split: chunks under a tokenizer's limit
    {"processing"},
    {"model"},  # the model core
    {"generation", "quantize", "packing"},  # generation drives the core's decoder with a static KV cache;
    # quantize: int8 decoder products; packing: decoder weights packed for oneDNN's CPU product
    {"candidates"},  # Tortoise's candidate loop on top of generation
    {"modeling"},  # Hugging Face's API around all of the above
    {"convert", "corpus"},  # corpus: books and corpora, chunked, resumable, sharded over torchrun
    {"cli", "__main__", "__init__", "bench"},
]
LAZY_ALLOWED = {"__init__", "cli"}
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def modules():
    return sorted(p for p in (ROOT / "clvp").glob("*.py"))


def clvp_imports(path):
    """(line, imported clvp module, inside a function?) for every import of a clvp module in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                if child.level == 1 and child.module:  # from .x import y
                    found.append((child.lineno, child.module.split(".")[0], nested))
                elif child.level == 1:  # from . import x, y
                    found.extend((child.lineno, alias.name, nested) for alias in child.names)
                elif child.module and child.module.split(".")[0] == "clvp":
                    parts = child.module.split(".")
                    found.extend((child.lineno, parts[1] if len(parts) > 1 else alias.name, nested) for alias in child.names)
            elif isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name.split(".")[1], nested) for alias in child.names
                             if alias.name.startswith("clvp."))
            visit(child, nested)

    visit(tree, False)
    return found


def test_every_module_has_a_layer():
    unknown = sorted(p.stem for p in modules() if p.stem not in RANK)
    assert not unknown, f"add these modules to a layer in tests/test_layering.py and docs/architecture.md: {unknown}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.stem)
def test_imports_run_one_way(path):
    rank = RANK[path.stem]
    wrong = []
    for line, target, in_function in clvp_imports(path):
        if in_function and path.stem not in LAZY_ALLOWED:
            wrong.append(f"line {line}: imports {target} inside a function")
        elif RANK.get(target, -1) > rank and path.stem not in LAZY_ALLOWED:
            wrong.append(f"line {line}: imports {target} (layer {RANK[target]}) from layer {rank}")
    assert not wrong, f"clvp/{path.name}:\n" + "\n".join(wrong)


def test_the_checker_sees_what_it_must(tmp_path):
    """The AST walk finds each import form, and where it stands."""
    probe = tmp_path / "probe.py"
    probe.write_text("from .model import x\nfrom . import generation\nimport clvp.modeling\n"
                     "from clvp.cli import main\ndef f():\n    from .candidates import y\n")
    assert clvp_imports(probe) == [(1, "model", False), (2, "generation", False), (3, "modeling", False),
                                   (4, "cli", False), (6, "candidates", True)]
