"""
ChatBERT-ED at the source's "small" size for one GPU: 6 encoder + 6 decoder layers, 512 wide, 46M parameters
(the source's ED-small is ~50M with a larger vocabulary). Its "base" size, 6 + 6 layers 768 wide, 102M parameters
(BERT-base's 110M counts a 30k vocabulary): add --n_embd=768 --n_head=12.
Not run in this repo's CI (no GPU); the CPU config is config/chatbert_ed.py.
Prepare: python -m prepare.chitchat
         python -m prepare.chatbert --tokenizer=data/chitchat
Train:   python train.py config/chatbert_ed_gpu.py
         torchrun --standalone --nproc_per_node=8 train.py config/chatbert_ed_gpu.py
"""
import os
exec(open(os.path.join(os.path.dirname(__file__), 'chatbert_ed.py')).read())  # the data and the kind

out_dir = 'out-chatbert-ed-gpu'
eval_interval = 1000
eval_iters = 50
log_interval = 100

n_layer = 6
n_head = 8
n_embd = 512
dropout = 0.1  # 125k pairs are few for 46M parameters

batch_size = 128
learning_rate = 6e-4
max_iters = 20000  # ~20 epochs of the pairs
min_lr = 6e-5
warmup_iters = 1000
