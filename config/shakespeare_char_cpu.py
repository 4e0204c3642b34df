"""
The CPU baby GPT on tiny shakespeare, characters: nanoGPT's CPU recipe (4 layers, 4 heads, 128 wide,
block 64, batch 12, 2000 iterations, no dropout), where nanoGPT reaches val loss 1.88.
Prepare: python -m prepare.text ../shared/data/tinyshakespeare.txt --tokenizer=char --out=data/shakespeare_char
Train:   python train.py config/shakespeare_char_cpu.py   (a few minutes on 2 CPU cores; see README for the val loss)
nanoGPT's own architecture, for comparison: add --pos=learned --norm=layer --mlp=gelu --bias=True
"""

out_dir = 'out-shakespeare-char-cpu'
eval_interval = 250
eval_iters = 200
log_interval = 50
always_save_checkpoint = False

dataset = 'shakespeare_char'
batch_size = 12
block_size = 64

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0

learning_rate = 1e-3
max_iters = 2000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
device = 'cpu'
