"""
Train, val and test: the one split every prepare script and every evaluation uses.
- train is what a model learns from;
- val is for every choice: best.pt, early stopping, advance_when, learning rates, iteration counts, which rule or
  setting a table reports;
- test is read once, for the reported tables. Nothing is tuned on it.
A key (a conversation id, a document's name, a problem's question) goes to a split by the md5 of its text, so the
split is the same on every machine and every run, and a whole conversation or document goes to one split: no test
conversation is half-seen in training. Test takes the lowest hashes, then val, so growing val never moves a test key.
"""
import hashlib

VAL_FRAC = 0.05
TEST_FRAC = 0.05
SPLITS = ('train', 'val', 'test')


def split_of(key, val_frac=VAL_FRAC, test_frac=TEST_FRAC):
    """'train', 'val' or 'test' for a key (str), deterministically (Python's hash() of a str is salted; md5 is not)."""
    h = int.from_bytes(hashlib.md5(key.encode('utf-8')).digest()[:8], 'big') / 2**64
    return 'test' if h < test_frac else 'val' if h < test_frac + val_frac else 'train'


def split_keys(keys, val_frac=VAL_FRAC, test_frac=TEST_FRAC):
    """{split: [key, ...]} of keys in their given order."""
    out = {s: [] for s in SPLITS}
    for k in keys:
        out[split_of(k, val_frac, test_frac)].append(k)
    return out


def chitchat_splits(val_frac=VAL_FRAC, test_frac=TEST_FRAC):
    """{conversation id: split} of every chitchat conversation: split_of its id, where a copy takes its original's.
    chitchat holds 928 exact copies of conversations under other ids (7,168 ids, 6,240 distinct conversations); split
    by their own ids, 30 test conversations had copies in train. The original is the first id with the same text in
    the dataset's order, so a conversation with no copy is split by its own id, as a reader keyed by id expects."""
    import chitchat_dataset
    first, out = {}, {}
    for cid, c in chitchat_dataset.Dataset().items():
        original = first.setdefault('\n'.join(m['text'] for turn in c['messages'] for m in turn), cid)
        out[cid] = split_of(original, val_frac, test_frac)
    return out


def split_conversations(val_frac=VAL_FRAC, test_frac=TEST_FRAC):
    """{'train', 'val', 'test': [conversation, ...]} of chitchat by chitchat_splits, each conversation a list of
    (role, text) turns. A turn is consecutive messages by one sender, one line per message; the two senders
    alternate, and whoever opens plays the user. Every project holds out the same val and test conversations."""
    import chitchat_dataset
    split = chitchat_splits(val_frac, test_frac)
    out = {s: [] for s in SPLITS}
    for cid, c in chitchat_dataset.Dataset().items():
        turns = [('user' if i % 2 == 0 else 'assistant', '\n'.join(m['text'] for m in turn))
                 for i, turn in enumerate(c['messages'])]
        out[split[cid]].append(turns)
    return out
