"""
Semantic word categories and analogies for TurnGPT's per-token turn vectors (a (V, E) table, E = 8..64):
- CATEGORIES: 773 common chat words in 19 disjoint categories, for semantic_init, which starts the rows of a
  category's words around a shared random direction, so a model begins with "hello" near "thanks".
- RELATIONS / ANALOGIES: word pairs of one relation each (he:she, go:went, fast:faster, ...) and the 89 a:b :: c:d
  analogies built from them. No analogy word is in any category: TurnGPT's source initialized vectors around
  categories and then reported "king - man + woman = queen works" on the same hand-set words, which holds by
  construction. Here the analogy words get no help from the init, so analogy_eval measures what training taught.
- analogy_eval: 3CosAdd top-1 (the standard, and with a, b, c left in as candidates), rank of the answer, and
  the raw parallelogram distance ||b - a + c - d||, in the table's own space.
- heatmap: words x dimensions of a table, to look at.

Coverage with data/chitchat's 4,096-token BPE (python -m projects.turngpt.semantic_coverage data/chitchat):
  categories: 742 of 773 words are one token (96%); split='first' sets 769 rows (27 by a first piece, 4 whose
    first piece is taken, e.g. 'welcome' -> ' we'), split='skip' (the default) 742
  analogies: 84 of 89 usable, all 4 words one token (the 5 country:language ones are split words here), answers
    picked among 2,245 word tokens; a random table scores top1 0, rank ~1,100, distance_rel ~2.0
"""
import math

import torch
from torch.nn import functional as F

# -----------------------------------------------------------------------------
# word lists, written for nanolab: common words of casual chat, so most are one token in a small BPE

CATEGORIES = {
    'conversation': """hello hi hey thanks thank sorry yes yeah okay ok no please lol haha hahaha hahah wow oh um
        huh sure alright gotcha dude bro gosh goodness heck dang kidding anyway whatever bye welcome agree
        definitely absolutely totally chat chatting chatted conversation conversations""".split(),
    'emotions': """love hate happy sad excited scared afraid glad tired bored nervous stressed stress worried worry
        fear grateful mad confused surprised annoying relax fun miss feel feeling feelings emotions emotion hope
        wish awkward hurt pain cry cried peace passion passionate lucky sick hungry impressed interested angry
        proud upset""".split(),
    'questions': """who what when where why how which whether question questions answer wonder wondering curious
        guess explain mean meaning reason maybe might probably opinion advice suppose whats hows understand sense
        example perhaps""".split(),
    'pronouns': """i you we they it me us them my your our their its mine yours myself yourself themselves itself
        someone everyone anyone something anything everything nothing this that these those nobody""".split(),
    'relationships': """friend friends family parents kids kid child children baby roommate roommates siblings
        couple married dating relationship relationships people person team group members lady adult human
        humans guy guys date mother together alone social society leader cousin grandma wedding""".split(),
    'actions': """drink sleep sit stand run climb hike swim dance sing draw build fix clean cook travel visit
        drive ride fly spend save share send pick throw catch push pull hold open turn wait stay leave bring
        wear check choose plan practice exercise rest hang hit kill die fight use need want sell rent follow
        lead help try make get say keep grow break lose pay put let create improve remember forget believe
        imagine focus allow avoid accept apply protect survive support join wash""".split(),
    'time_space': """today tomorrow yesterday tonight now then soon later early late sometimes often usually
        morning night evening weekend day days summer winter spring season past future since until ago already
        yet still again once twice currently lately forever moment time times here there near far inside
        outside around behind above under between front back away place places somewhere anywhere everywhere
        north south east top middle side area next recently earlier during through across towards over
        west""".split(),
    'descriptors': """good bad great nice cool awesome amazing weird funny crazy interesting boring cute beautiful
        sweet perfect terrible awful small little huge large new true wrong different same similar special
        important simple strange normal random stupid dumb smart wise fair safe dangerous fresh strong rich
        poor cheap expensive free busy lazy healthy popular famous unique basic complex wonderful incredible
        fantastic ridiculous insane hilarious scary creepy gross pretty legit wild tough deep short tall neat
        lame rare odd evil fake solid decent average extreme intense impossible possible difficult full ready
        correct useful helpful modern classic original tiny ugly""".split(),
    'technology': """computer computers phone phones internet online website app email code coding program
        programming software data laptop ipad google youtube netflix tv screen video videos tech technology
        machine engine system user text typing web windows headphones macbook media account artificial
        intelligence electric message messages information security glitch programs camera""".split(),
    'science': """science biology chemistry physics math research theory lab brain energy space universe
        engineering medical doctor health knowledge environment power speed chemical experiment gravity
        climate""".split(),
    'nature': """nature sun moon star sky earth planet ocean sea lake beach island hill sand ground rain snow wind
        weather trees plant fire air wood rock mountain""".split(),
    'food': """food water tea milk bread pizza cheese chocolate pasta rice cake cookies candy sandwich breakfast
        lunch dinner meal sushi bacon chicken egg meat ice cream butter peanut apple carrot sauce foods taste
        flavor pie nut ginger coffee""".split(),
    'everyday': """home car cars house room bed door table money dollars store shop clothes shoes dress bag box
        paper bus bike train road street city town park church office bath window wall apartment building
        glass card key clock pool gym kitchen""".split(),
    'school_work': """school class classes college student students teacher professor homework exam test tests grade
        grades major minor degree semester campus graduate graduation freshman senior library course
        scholarship finals study studying education history subject project projects job jobs career internship
        business company companies marketing accounting interview boss""".split(),
    'numbers': """one two three four five six ten hundred thousand million half double single third second
        number numbers seven eight nine""".split(),
    'colors': """red blue green yellow pink purple orange brown gold indigo color dark gray""".split(),
    'animals': """dog dogs cat cats bird cow fish sheep elephant parrot shrew pet pets animal animals catfish
        horse""".split(),
    'body': """head hand hands eyes eye face hair teeth feet foot leg heart blood skin mouth body arm nose""".split(),
    'hobbies': """music movie movies game games sports football soccer volleyball piano guitar art party concert
        jazz band anime film show shows episode series marvel hobbies photography hiking fishing swimming book
        books story stories singing dancing drawing sport musical character characters trip basketball""".split(),
}

# pairs x:y of one relation each; no word is in two pairs (so a test can build a table where every analogy
# holds exactly) nor in CATEGORIES (so semantic_init can't make an analogy true)
RELATIONS = {rel: [tuple(p.split(':')) for p in pairs.split()] for rel, pairs in {
    'gender': """he:she him:her boy:girl boys:girls brother:sister brothers:sisters dad:mom husband:wife
        boyfriend:girlfriend men:women""",
    'past': """go:went see:saw eat:ate come:came take:took give:gave know:knew tell:told find:found buy:bought
        write:wrote think:thought hear:heard meet:met win:won teach:taught""",
    'past_ed': """jump:jumped laugh:laughed call:called ask:asked start:started decide:decided move:moved
        happen:happened stop:stopped enjoy:enjoyed finish:finished change:changed""",
    'progressive': """play:playing watch:watching talk:talking work:working listen:listening look:looking
        learn:learning read:reading""",
    'comparative': """fast:faster hard:harder easy:easier high:higher old:older young:younger long:longer
        close:closer big:bigger""",
    'adverb': """quick:quickly slow:slowly soft:softly loud:loudly calm:calmly quiet:quietly light:lightly
        honest:honestly serious:seriously real:really""",
    'plural': """year:years week:weeks hour:hours month:months minute:minutes idea:ideas picture:pictures
        song:songs pig:pigs robot:robots unicorn:unicorns""",
    'opposite': """up:down in:out before:after always:never black:white hot:cold left:right first:last""",
    'language': """spain:spanish france:french china:chinese japan:japanese england:english""",
}.items()}

# each pair with the next one of its relation, the last with the first: every pair is once a:b and once c:d
ANALOGIES = [p + q for pairs in RELATIONS.values() for p, q in zip(pairs, pairs[1:] + pairs[:1])]

# -----------------------------------------------------------------------------
# words -> token ids


def word_ids(tok, words, split='first', reserved=()):
    """({word: token id}, stats) for the token of ' word': with a leading space, the form a word takes mid-sentence
    in a byte-level BPE. A word the BPE splits gets its first piece (split='first') or is dropped ('skip'). Two words
    on one id: the first keeps it and the rest count as 'collided', except that one-token words go before split
    ones, so 'welcome' (' we' 'lcome') can't take ' we' from 'we'; ids in reserved are taken from the start.
    The counts add up: single + split_first + skipped + collided == words; a word the tokenizer can't encode at all
    (a character a char vocabulary lacks) is skipped."""
    assert split in ('first', 'skip'), f"split must be 'first' or 'skip', got {split!r}"
    ids, stats = {}, {'words': len(words), 'single': 0, 'split_first': 0, 'skipped': 0, 'collided': 0}
    taken = set(reserved)
    def encode(w):
        try:
            return tok.encode(' ' + w)
        except ValueError:  # a character a char tokenizer never saw: the word has no tokens
            return None
    encoded = sorted(((w, encode(w)) for w in words), key=lambda wp: wp[1] is None or len(wp[1]) > 1)  # singles first
    for w, pieces in encoded:
        if pieces is None or (len(pieces) > 1 and split == 'skip'):
            stats['skipped'] += 1
        elif pieces[0] in taken:
            stats['collided'] += 1
        else:
            stats['single' if len(pieces) == 1 else 'split_first'] += 1
            ids[w] = pieces[0]
            taken.add(pieces[0])
    return ids, stats


def word_candidates(tok):
    """The ids whose text is ' ' + a lowercase ASCII word: the vocabulary an analogy's answer is picked from, so a
    punctuation mark or a word piece ('ing') can't win by accident. ~2,200 of data/chitchat's 4,096 tokens."""
    words = []
    for i in range(tok.vocab_size):
        s = tok.decode([i])  # a special token decodes to '<|bos|>' etc., a cut character to U+FFFD: neither passes
        if s[:1] == ' ' and s[1:].isascii() and s[1:].isalpha() and s[1:].islower():
            words.append(i)
    return torch.tensor(words, dtype=torch.long)

# -----------------------------------------------------------------------------
# semantic initialization


@torch.no_grad()
def semantic_init(table, tok, generator=None, spread=0.5, split='skip', categories=CATEGORIES):
    """Set, in place, the rows of a (V, E) table for the categories' words: one random direction per category, each
    word at center * sqrt(1 - spread^2) + spread * noise, center and noise N(0, 1) per coordinate. Two words of a
    category then have cosine ~1 - spread^2 (0.75 by default), two of different categories ~0.
    Scale: the sum has unit variance per coordinate, times the std of the table as it is (1 for an N(0, 1) table),
    so the initialized rows are as large as the model's own init expects; a row of larger norm would dominate
    the projection to model width. Rows of other tokens are left as they are. Returns word_ids' stats and
    'initialized' (rows set) and 'categories' (with at least one row set)."""
    assert 0 <= spread <= 1, f"spread must be in [0, 1], got {spread}"
    category = {w: k for k, words in enumerate(categories.values()) for w in words}
    # the analogy words' tokens are off limits, also to a split word's first piece ('upset' -> ' up')
    reserved = word_ids(tok, sorted({w for q in ANALOGIES for w in q}), split='skip')[0].values()
    ids, stats = word_ids(tok, list(category), split, reserved)
    ids = {w: i for w, i in ids.items() if i < len(table)}  # a table smaller than the tokenizer's vocabulary
    scale = table.float().std().item() or 1.0  # a zero-initialized table gets unit-variance rows
    centers = torch.randn(len(categories), table.size(1), generator=generator)  # (n_categories, E)
    cats = torch.tensor([category[w] for w in ids], dtype=torch.long)
    noise = torch.randn(len(ids), table.size(1), generator=generator)  # (n_words, E)
    rows = centers[cats] * math.sqrt(1 - spread ** 2) + spread * noise
    table[torch.tensor(list(ids.values()), dtype=torch.long)] = (scale * rows).to(table)
    return {**stats, 'initialized': len(ids), 'categories': len(set(cats.tolist()))}


def describe_init(stats):
    """One line for a training log."""
    return (f"semantic init: {stats['initialized']} of {stats['words']} words ({stats['split_first']} by their first "
            f"piece, {stats['skipped']} split and skipped, {stats['collided']} on a taken token), "
            f"{stats['categories']} categories")

# -----------------------------------------------------------------------------
# analogies


@torch.no_grad()
def analogy_eval(table, tok, analogies=ANALOGIES):
    """a:b :: c:d on the rows of a (V, E) table, over the analogies whose 4 words are one token each.
    top1_excl: 3CosAdd (Mikolov et al. 2013), the candidate word nearest in cosine to b - a + c on unit rows,
    a, b and c excluded as everyone does; top1_incl: the same with them left in, where the answer is often just b
    or c. rank_mean: d's rank (1 = first) in the excluded setting, ~half the candidates for a random table.
    distance: mean ||b - a + c - d|| on raw rows; distance_rel: over the mean norm of those rows, 0 when the
    parallelogram closes, ~2 for independent random rows."""
    cand = word_candidates(tok)
    cand = cand[cand < len(table)]
    ids, _ = word_ids(tok, sorted({w for q in analogies for w in q}), split='skip')
    in_cand = set(cand.tolist())
    used = [q for q in analogies if all(w in ids and ids[w] in in_cand for w in q)]
    out = {'n': len(used), 'n_skipped': len(analogies) - len(used), 'candidates': len(cand)}
    if not used:
        return {**out, **dict.fromkeys(('top1_excl', 'top1_incl', 'rank_mean', 'distance', 'distance_rel'), math.nan)}
    q = torch.tensor([[ids[w] for w in x] for x in used])  # (n, 4) token ids of a, b, c, d
    a, b, c, d = q.unbind(1)
    W = table.detach().cpu().double()  # small, and float64 keeps near-ties where a float64 reference puts them
    U = F.normalize(W, dim=1)
    sims = F.normalize(U[b] - U[a] + U[c], dim=1) @ U[cand].T  # (n, n_candidates): cosines, one matmul
    col = torch.full((len(table),), -1, dtype=torch.long)
    col[cand] = torch.arange(len(cand))  # token id -> its column in sims
    excl = sims.scatter(1, col[q[:, :3]], -math.inf)
    rank = (excl > excl.gather(1, col[d][:, None])).sum(1) + 1
    pred_excl, pred_incl = cand[excl.argmax(1)], cand[sims.argmax(1)]
    dist = (W[b] - W[a] + W[c] - W[d]).norm(dim=1)
    words = lambda t: [tok.decode([i]).strip() for i in t.tolist()]
    return {**out, 'top1_excl': (pred_excl == d).double().mean().item(),
            'top1_incl': (pred_incl == d).double().mean().item(), 'rank_mean': rank.double().mean().item(),
            'distance': dist.mean().item(), 'distance_rel': (dist.mean() / W[q].norm(dim=-1).mean()).item(),
            'used': used, 'pred_excl': words(pred_excl), 'pred_incl': words(pred_incl)}

# -----------------------------------------------------------------------------
# looking at a table


def heatmap_words(per_category=3, n_categories=6, relations=('gender', 'past')):
    """A few words of each of the first categories, then the first pair of a few relations."""
    words = [w for ws in list(CATEGORIES.values())[:n_categories] for w in ws[:per_category]]
    return words + [w for r in relations for w in RELATIONS[r][0]]


def heatmap(table, tok, words, path, title=''):
    """A PNG of the words' rows (one-token words only) x the table's E dimensions, blue < 0 < red."""
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    import matplotlib.pyplot as plt
    ids, _ = word_ids(tok, words, split='skip')
    rows = table.detach()[list(ids.values())].float().cpu().numpy()  # (n_words, E); a Parameter too
    category = {w: k for k, ws in CATEGORIES.items() for w in ws}
    labels = [f"{w} ({category.get(w, 'analogy')})" for w in ids]
    m = abs(rows).max() or 1.0  # symmetric limits: white is 0
    fig, ax = plt.subplots(figsize=(2.5 + 0.25 * rows.shape[1], 1 + 0.25 * len(labels)))
    im = ax.imshow(rows, cmap='RdBu_r', vmin=-m, vmax=m, aspect='auto', interpolation='nearest')
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel('dimension')
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)

