"""``genrec``: one subcommand per stage (prepare, index, train, eval, demo, serve, generate, benchmark), and
``catalogue`` to change a trained bundle's items without retraining."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml

from generative_rec.errors import ConfigError, GenRecError

log = logging.getLogger("generative_rec")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- prepare / index
def cmd_prepare(a) -> None:
    from dataclasses import fields

    from generative_rec.data import PrepareConfig, prepare

    d = yaml.safe_load(Path(a.config).read_text()) if a.config else {}
    if isinstance(d, dict) and "prepare" in d and "source" not in d:
        d = d["prepare"]  # a run config's data.prepare section also works
    for f in fields(PrepareConfig):
        v = getattr(a, f.name, None)
        if v is not None and v is not False:
            d[f.name] = v
    out = prepare(PrepareConfig(**d))
    meta = json.loads((out / "meta.json").read_text())
    print(f"{out}: {meta['num_users']} users, {meta['num_items']} items, {meta['num_interactions']} interactions")
    if "cold_start" in meta:
        c = meta["cold_start"]
        print(f"cold start: {c['num_new_items']} new items; new targets: {c['valid_targets_new']} validation, "
              f"{c['test_targets_new']} test")


class _LazyEpilogFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks; a callable epilog is computed only when the help is shown."""

    def add_text(self, text):
        super().add_text(text() if callable(text) else text)


def _scheme_options_help() -> str:
    from generative_rec.indexing import SCHEME_OPTIONS
    from generative_rec.options import help_text

    return help_text("scheme options (--options / index.options; name: type = default; docs/options.md):",
                     SCHEME_OPTIONS)


def cmd_index(a) -> None:
    if a.add_items or a.bundle:
        if not (a.add_items and a.bundle):
            raise ConfigError("genrec index: --add-items and --bundle go together")
        return cmd_catalogue_add(argparse.Namespace(bundle=a.bundle, items=a.add_items, embeddings=a.embeddings))
    if not a.data:
        raise ConfigError("genrec index: --data is required (or --add-items FILE --bundle BUNDLE)")
    from generative_rec.data import RecData
    from generative_rec.indexing import IndexConfig, build_index
    from generative_rec.io import atomic_dir
    from generative_rec.modeling import resolve_model

    cfg = IndexConfig(scheme=a.scheme, seed=a.seed, options=yaml.safe_load(a.options or "{}"))  # checked here
    data = RecData(a.data)
    index = build_index(data, cfg)
    print(index.describe())
    trie = None
    if a.model:  # the trie over this tokenizer (checks the IDs are prefix-free there); written with --output
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resolve_model(a.model))
        tok.add_tokens(index.new_tokens)
        trie = index.build_trie(tok)
        print(f"trie: {trie.num_nodes} nodes, depth {trie.max_depth}, {trie.nbytes / 1e6:.1f} MB")
    if a.output:
        with atomic_dir(a.output, overwrite=a.overwrite) as tmp:
            index.save(tmp / "index.json")
            if trie is not None:
                trie.save(tmp / "trie.npz")
        print(f"wrote {a.output}")


# --------------------------------------------------------------------------- catalogue (docs/catalogue.md)
def _print_version(cat, what: str) -> None:
    print(f"catalogue version {cat.version}: {what}; {cat.num_items} items, {len(cat.hidden)} hidden "
          "(a running `genrec serve` picks it up with POST /v1/admin/catalogue/reload or --watch-catalogue)")


def cmd_catalogue_add(a) -> None:
    import numpy as np

    from generative_rec.catalogue import add_items, read_new_items

    items = read_new_items(a.items)
    emb = np.load(a.embeddings) if a.embeddings else None
    cat = add_items(a.bundle, items, embeddings=emb)
    shown = ", ".join(f"{iid}->{t}" for iid, t in zip(cat.item_ids[-len(items):][:3],
                                                       cat.index.id_texts[-len(items):][:3], strict=True))
    _print_version(cat, f"added {len(items)} items ({shown}{', ...' if len(items) > 3 else ''})")


def cmd_catalogue_hide(a) -> None:
    from generative_rec.catalogue import hide_items, unhide_items

    fn = hide_items if a.command_catalogue == "hide" else unhide_items
    cat = fn(a.bundle, a.item_ids)
    _print_version(cat, f"{a.command_catalogue} {len(a.item_ids)} items")


def cmd_catalogue_show(a) -> None:
    from generative_rec.catalogue import describe

    print(json.dumps(describe(a.bundle), indent=2))


def add_catalogue_parser(sub) -> None:
    s = sub.add_parser("catalogue", help="change a trained bundle's catalogue without retraining: add, hide, "
                                         "unhide items (docs/catalogue.md)")
    cs = s.add_subparsers(dest="command_catalogue", required=True)
    c = cs.add_parser("add", help="append items (title or semantic IDs only) as a new catalogue version")
    c.add_argument("bundle")
    c.add_argument("items", help="JSONL: item_id, title, optional text, attributes")
    c.add_argument("--embeddings", help="semantic IDs: .npy of the new items' vectors (default: the index's encoder)")
    c.set_defaults(fn=cmd_catalogue_add)
    for name, what in (("hide", "never recommend these items (out of stock)"), ("unhide", "recommend them again")):
        c = cs.add_parser(name, help=what)
        c.add_argument("bundle")
        c.add_argument("item_ids", nargs="+")
        c.set_defaults(fn=cmd_catalogue_hide)
    c = cs.add_parser("show", help="the current catalogue version")
    c.add_argument("bundle")
    c.set_defaults(fn=cmd_catalogue_show)


# --------------------------------------------------------------------------- train / eval / demo
def cmd_train(a) -> None:
    from generative_rec.config import load_config
    from generative_rec.training import train

    cfg = load_config(a.config, a.set)
    train(cfg, resume=a.resume, overwrite=a.overwrite)


def cmd_eval(a) -> None:
    from generative_rec.config import EvalSection
    from generative_rec.evaluation.run import evaluate_bundle, print_examples

    cfg = EvalSection(split=a.split, users=a.users, seed=a.seed, ks=list(a.ks), num_beams=a.num_beams,
                      batch_size=a.batch_size, template=a.template, mask_history=not a.no_mask_history,
                      baselines=[b for b in a.baselines.split(",") if b], unconstrained_users=a.unconstrained_users,
                      explain_users=a.explain)
    rep = evaluate_bundle(a.bundle, cfg, a.data, a.output or Path(a.bundle) / f"eval-{a.split}", progress=True)
    print()
    print(print_examples(rep, n=1))
    print()
    print(f"{rep['split']} split, {rep['users']} users, full ranking over all items, "
          f"history masked: {rep['mask_history']}")
    print(rep["table"])
    if rep.get("significance"):
        s = rep["significance"]
        print(f"\nLLM vs {s['vs']} (per-user NDCG@10): mean diff {s['mean_diff']:+.4f}, "
              f"paired t-test p={s['t_pvalue']:.3g}, Wilcoxon p={s['wilcoxon_pvalue']:.3g}")
    if rep.get("explanations"):
        from generative_rec.explain.evaluate import explanation_table

        print(f"\nExplanations ({rep['explanations']['users']} users, template {rep['explanations']['template']}):")
        print(explanation_table(rep["explanations"]))
    print(f"\nwritten: {Path(a.output or Path(a.bundle) / f'eval-{a.split}') / 'results.md'}")


def cmd_demo(a) -> None:
    """Prepare MovieLens-100K, fine-tune SmolLM2 with LoRA on the CPU demo config, evaluate it beside the
    config's baselines (Pop, ItemKNN, SASRec) on every test user."""
    from generative_rec.config import load_config
    from generative_rec.evaluation.run import evaluate_bundle, print_examples
    from generative_rec.paths import repo_root
    from generative_rec.training import train

    cfg_path = a.config or repo_root() / "train" / "configs" / "demo_cpu.yaml"
    cfg = load_config(cfg_path, a.set)
    print(f"== generative_rec demo: {cfg_path}")
    bundle = train(cfg, resume=a.resume, overwrite=not a.resume)
    e = cfg.eval
    rep = evaluate_bundle(bundle, e, output=Path(bundle) / f"eval-{e.split}")
    print()
    print(print_examples(rep, n=1))
    print()
    who = "every user" if e.users is None else f"a seeded sample (seed {e.seed})"
    print(f"== {e.split} split, {rep['users']} users ({who}), full ranking over all items, history masked")
    print(rep["table"])
    if rep.get("significance"):
        s = rep["significance"]
        print(f"LLM vs {s['vs']} (per-user NDCG@10): mean diff {s['mean_diff']:+.4f}, "
              f"paired t-test p={s['t_pvalue']:.3g}")
    print(f"\nbundle: {bundle}   report: {Path(bundle) / f'eval-{e.split}' / 'results.md'}")


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genrec", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="read raw data, validate, split (leave-one-out), write a prepared folder")
    s.add_argument("--config", help="YAML with PrepareConfig fields")
    s.add_argument("--source", help="ml-100k | atomic | table | amazon")
    s.add_argument("--output")
    s.add_argument("--kcore", type=int)
    s.add_argument("--min-rating", dest="min_rating", type=float)
    s.add_argument("--max-history", dest="max_history", type=int)
    s.add_argument("--new-items", dest="new_items", type=float, metavar="FRACTION",
                   help="cold-start protocol: this seeded fraction of items loses its training interactions and "
                        "appears only as validation / test targets (docs/evaluation.md)")
    s.add_argument("--new-items-seed", dest="new_items_seed", type=int)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(fn=cmd_prepare)

    s = sub.add_parser("index", help="build an item index (and, with --model, its trie) for inspection",
                       formatter_class=_LazyEpilogFormatter, epilog=_scheme_options_help)
    s.add_argument("--data", help="prepared data to index (required unless --add-items)")
    s.add_argument("--scheme", default="atomic")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--options", help="scheme options as YAML, e.g. '{levels: 3}' (per scheme: below)")
    s.add_argument("--model", help="tokenizer to build the trie with (e.g. smollm2-135m)")
    s.add_argument("--output")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--add-items", dest="add_items", metavar="ITEMS.jsonl",
                   help="instead: add these items to --bundle's catalogue (= genrec catalogue add BUNDLE ITEMS)")
    s.add_argument("--bundle", help="with --add-items: the trained bundle")
    s.add_argument("--embeddings", help="with --add-items, semantic IDs: .npy of the new items' vectors")
    s.set_defaults(fn=cmd_index)
    add_catalogue_parser(sub)

    s = sub.add_parser("train", help="LoRA fine-tuning -> bundle (same code as train/finetune.py)")
    s.add_argument("--config", required=True)
    s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output folder")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("eval", help="evaluate a bundle against baselines on the same users")
    s.add_argument("--bundle", required=True)
    s.add_argument("--data", help="prepared data (default: the bundle's)")
    s.add_argument("--split", default="test", choices=["valid", "test"])
    s.add_argument("--users", type=int, help="seeded sample of N users (default: all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 20])
    s.add_argument("--num-beams", dest="num_beams", type=int)
    s.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    s.add_argument("--template", help="next_item template key (default: the bundle's inference template)")
    s.add_argument("--baselines", default="pop", help="comma-separated baseline names")
    s.add_argument("--no-mask-history", dest="no_mask_history", action="store_true")
    s.add_argument("--unconstrained-users", dest="unconstrained_users", type=int, default=64, metavar="N",
                   help="also decode N users without the trie and report invalid / duplicate IDs (0: skip)")
    s.add_argument("--explain", type=int, default=0, metavar="N",
                   help="also explain the target and top-1 item of N users: faithfulness, BLEU/ROUGE (default 0)")
    s.add_argument("--output")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("demo", help="the README's first command: MovieLens-100K + SmolLM2 on a CPU in minutes")
    s.add_argument("--config")
    s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    s.add_argument("--resume", action="store_true")
    s.set_defaults(fn=cmd_demo)

    for register in _extra_commands():
        register(sub)
    return p


def _extra_commands():
    """Subcommands living next to their stage (serving, generation, benchmark) register themselves here."""
    out = []
    for mod, fn in (("generative_rec.serving.cli", "register"), ("generative_rec.generate_cli", "register_cli"),
                    ("generative_rec.benchmark", "register_cli")):
        try:
            m = __import__(mod, fromlist=[fn])
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("generative_rec"):
                continue
            raise
        out.append(getattr(m, fn))
    return out


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        args.fn(args)
    except (GenRecError, FileExistsError, FileNotFoundError) as e:
        print(f"genrec {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
