"""The sentence-similarity command line (STS-benchmark):

    python -m tasks.similarity --zero-shot [--split test|dev] [--out FILE] [--model DIR]

`--zero-shot` scores each pair by the cosine of the two sentence embeddings, with no training,
and prints Spearman and Pearson x 100 against the gold ratings. The evaluation itself lives in
`tasks/sts.py`; this module only parses arguments and prints.
"""
import argparse
import sys

from tasks import sts


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tasks.similarity",
                                     description="Sentence similarity on the STS-benchmark.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--zero-shot", action="store_true",
                      help="evaluate the sentence embeddings as they are, without training")
    parser.add_argument("--split", choices=sorted(sts.SPLITS), default="test",
                        help="STS-B split to evaluate (default: test)")
    parser.add_argument("--out", metavar="FILE", help="write the results to FILE as JSON")
    parser.add_argument("--model", metavar="DIR",
                        help="BERT folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--max-length", type=int,
                        help="tokens per sentence (default: the model's max_seq_length, else 128)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.zero_shot:
        result = sts.zero_shot(args.model, args.split, args.out, max_length=args.max_length)
    print(f"STS-B {result['split']} ({result['pairs']} pairs, {result['mode']}, max_length "
          f"{result['max_length']}): Spearman {result['spearman']:.2f}  "
          f"Pearson {result['pearson']:.2f}  ({result['seconds']:.0f} s)")
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
