"""
A baby GPT on tiny shakespeare, characters: nanoGPT's GPU config (6 layers, 6 heads, 384 wide, block 256).
Prepare: python -m prepare.text ../shared/data/tinyshakespeare.txt --tokenizer=char --out=data/shakespeare_char
Train:   python train.py config/shakespeare_char.py   (about 3 minutes on an A100; nanoGPT's reaches val 1.47)
Sample:  python sample.py --out_dir=out-shakespeare-char
"""

out_dir = 'out-shakespeare-char'
eval_interval = 250  # keep frequent because we'll overfit
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # only save when val improves

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # context of up to 256 previous characters

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

learning_rate = 1e-3  # with baby networks we can afford to go a bit higher
max_iters = 5000
min_lr = 1e-4
beta2 = 0.99  # a bit bigger because the number of tokens per iter is small
warmup_iters = 100
