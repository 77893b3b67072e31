"""``genrec generate``: the command line of batch generation — one engine (``generative_rec.generate``) or many
on Ray (``generative_rec.generate_ray``, ``--engine ray``)."""

from __future__ import annotations


def cmd_generate(a) -> None:
    from generative_rec.generate import GenerateOptions, generate
    from generative_rec.serving.cli import engine_options

    o = GenerateOptions(bundle=a.bundle, input=a.input, output=a.output, k=a.k, num_beams=a.num_beams,
                        exclude_history=not a.keep_history, batch_size=a.batch_size, resume=a.resume,
                        overwrite=a.overwrite, skip_invalid=a.skip_invalid, explain=a.explain,
                        engine=engine_options(a))
    if a.engine == "ray":  # many engines: generative_rec.generate_ray
        from generative_rec.generate_ray import cmd_generate_ray

        return cmd_generate_ray(a, o)
    from generative_rec.generate_ray import check_local_flags

    check_local_flags(a)
    s = generate(o)
    rate = s["written"] / s["seconds"] if s["seconds"] else 0.0
    print(f"{o.output}: {s['written']} users written ({s['skipped_done']} already there, {s['invalid']} invalid) "
          f"in {s['seconds']} s ({rate:.2f} users/s)")


def register_cli(subparsers) -> None:
    from generative_rec.serving.cli import add_engine_args

    s = subparsers.add_parser("generate", help="offline batch top-K recommendations through vLLM (JSONL in/out)",
                              description=__doc__.split("\n\n")[0])
    s.add_argument("--bundle", required=True)
    s.add_argument("--input", required=True, help="JSONL: {user_id, history, [k, exclude_history, exclude]}")
    s.add_argument("--output", required=True,
                   help="JSONL of {user_id, items: [{item_id, title, score[, explanation]}]}")
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--num-beams", dest="num_beams", type=int)
    s.add_argument("--keep-history", dest="keep_history", action="store_true",
                   help="allow items of the history in the results (default: excluded)")
    s.add_argument("--batch-size", dest="batch_size", type=int, default=64,
                   help="users decoded together and appended per write")
    s.add_argument("--resume", action="store_true", help="skip users already in --output (after a kill)")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--skip-invalid", dest="skip_invalid", action="store_true",
                   help="write an error line for a bad input line instead of stopping")
    s.add_argument("--explain", action="store_true",
                   help="also write a one-line explanation per item, as the server's \"explain\": true does "
                        "(bundles trained with the explain task only)")
    add_engine_args(s)
    from generative_rec.generate_ray import add_cli_args

    add_cli_args(s)  # --engine ray --workers N [--ray-address ADDR] ...
    s.set_defaults(fn=cmd_generate)
