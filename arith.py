"""
The RL phase's verifiable task: arithmetic word problems of graded difficulty, made by the project (so it runs
offline), each with a worked solution whose last line is the answer, "#### 42", as in GSM8K:

    level 1  Ann has 7 pens. She gets 5 more. How many pens does Ann have?      7 + 5 = 12 / #### 12
    level 2  ... one more step (buys or gives away)                              two lines of working
    level 3  ... a multiplication first ("3 boxes of 4 pens")                    two lines
    level 4  ... a multiplication and two more steps                             three lines

problems(split, n, level) is deterministic, and a problem's split ('train', 'val' or 'test') is splits.split_of
of its question, so no question is in two splits: val is for every choice (SFT's early stopping, RL's settings), test
is read once, for projects/rl/eval.py's table. check(text, answer) reads the final line exactly: anything else (no final
line, a wrong number, text after the number) scores 0. prepare/arith.py renders the problems as conversations for
SFT; dataloader.Rollouts samples answers to them for RL; projects/rl/eval.py measures pass@k.
"""

import random
import re

from splits import SPLITS, split_of

LEVELS = (1, 2, 3, 4)
NAMES = ['Ann', 'Ben', 'Cal', 'Dee', 'Eve', 'Fay', 'Gus', 'Hal', 'Ida', 'Jo', 'Kim', 'Lou']
ITEMS = ['pens', 'eggs', 'cards', 'books', 'apples', 'coins', 'shells', 'stamps', 'cups', 'keys']
PRONOUN = {'Ann': 'She', 'Dee': 'She', 'Eve': 'She', 'Fay': 'She', 'Ida': 'She', 'Kim': 'She', 'Jo': 'She'}
FINAL = re.compile(r'#### (-?\d+)')


def make_problem(rng, level):
    """One problem of a level, drawn with rng (random.Random): {question, solution, answer, level}. Numbers are
    small and every result is >= 0, so a tiny model can learn the arithmetic; a level adds one step or a product."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    he = PRONOUN.get(name, 'He')
    if level in (1, 2):
        a = rng.randint(2, 20)
        steps, total = [f"{name} has {a} {item}."], a
        work = []
    else:
        n, m = rng.randint(2, 9), rng.randint(2, 9)
        total = n * m
        steps, work = [f"{name} buys {n} boxes of {m} {item}."], [f"{n} * {m} = {total}"]
    for _ in range({1: 1, 2: 2, 3: 1, 4: 2}[level]):
        if rng.random() < 0.5 or total < 2:
            b = rng.randint(1, 20)
            steps.append(f"{he} gets {b} more.")
            work.append(f"{total} + {b} = {total + b}")
            total += b
        else:
            b = rng.randint(1, min(total, 20))
            steps.append(f"{he} gives away {b}.")
            work.append(f"{total} - {b} = {total - b}")
            total -= b
    question = ' '.join(steps) + f" How many {item} does {name} have?"
    return {'question': question, 'solution': '\n'.join(work + [f"#### {total}"]), 'answer': total, 'level': level}


def problems(split, n, level, seed=0):
    """n distinct problems of a level from split 'train', 'val' or 'test' (splits.split_of of the question, with its
    default 5% val and 5% test), the same ones for the same arguments."""
    assert split in SPLITS, split
    rng, out, seen = random.Random(f"{seed}-{level}"), [], set()
    for _ in range(200 * n + 10_000):  # a level has far more questions than anyone asks for; this only bounds the loop
        p = make_problem(rng, level)
        if p['question'] not in seen and split_of(p['question']) == split:
            seen.add(p['question'])
            out.append(p)
            if len(out) == n:
                return out
    raise ValueError(f"level {level} has fewer than {n} distinct {split} problems")


def last_number(question):
    """A floor baseline's answer: the last number the question states (a level-1 problem's added amount, often)."""
    numbers = re.findall(r'\d+', question)
    return int(numbers[-1]) if numbers else 0


def most_common_answers(train):
    """A floor baseline's answers: {level: the most common answer among train problems of that level} (the
    smallest on a tie), a constant per level that a model could learn without reading the question."""
    counts = {}
    for p in train:
        c = counts.setdefault(p['level'], {})
        c[p['answer']] = c.get(p['answer'], 0) + 1
    return {level: max(sorted(c), key=c.get) for level, c in counts.items()}


def parse_answer(text):
    """The integer on the text's final line, written '#### N' and nothing else (commas in N allowed: GSM8K writes
    1,000), or None: a missing, malformed or unfinished final line is no answer."""
    lines = text.strip().split('\n')
    match = FINAL.fullmatch(lines[-1].strip().replace(',', '')) if lines else None
    return int(match.group(1)) if match else None


def check(text, answer):
    """1.0 if the text's final line gives the answer, else 0.0: the reward."""
    return float(parse_answer(text) == answer)


def gsm8k(split):
    """GSM8K (nanochat's task) through the datasets library, in this module's format: its solutions already end
    '#### N'; their calculator notes <<2*3=6>> go. Needs the hub: one line offline."""
    from prepare.common import hub_unreachable
    if hub_unreachable():
        raise SystemExit(f"{hub_unreachable()}; GSM8K needs the Hugging Face hub. Offline, use the built-in "
                         f"arithmetic problems: python -m prepare.arith")
    try:
        import datasets
        ds = datasets.load_dataset('openai/gsm8k', 'main', split=split)
    except Exception as e:  # no datasets library, no network, nothing cached under HF_HUB_OFFLINE
        msg = (str(e).strip().splitlines() or [''])[0][:200]
        raise SystemExit(f"could not load GSM8K ({type(e).__name__}: {msg}); offline, use the built-in arithmetic "
                         f"problems: python -m prepare.arith") from None
    out = []
    for row in ds:
        solution = re.sub(r'<<[^>]*>>', '', row['answer']).strip()
        out.append({'question': row['question'], 'solution': solution, 'answer': parse_answer(solution), 'level': 0})
    return out
