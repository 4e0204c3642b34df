"""
The arrow of time on GPUs at the source's depths: d20 here (nanochat's shape, n_embd = 64 x depth in heads of
128), block 1024, on FineWeb-Edu through prepare.hf; projects/backward/arrow.py also runs d12 and d26 from it.
Prepare: python -m prepare.hf HuggingFaceFW/fineweb-edu --config=sample-10BT --split='train[:2%]' --tokenizer=bpe --vocab_size=32768 --out=data/fineweb
Train:   torchrun --standalone --nproc_per_node=8 train.py config/arrow_gpu.py --direction=backward
Study:   python -m projects.backward.arrow --sizes=d12,d20,d26 --seeds=1 --workers=1
Not run here (this project's machines have no GPU): sized from nanochat's d20, untested at this scale.
"""

out_dir = 'out-arrow-gpu'
dataset = 'fineweb'
eval_interval = 500
eval_iters = 50
log_interval = 50

gradient_accumulation_steps = 8
batch_size = 32
block_size = 1024
n_layer = 20
n_head = 10
n_embd = 1280

learning_rate = 6e-4
max_iters = 10000
min_lr = 6e-5
warmup_iters = 500
