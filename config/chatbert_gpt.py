"""
ChatBERT's autoregressive baseline: the core's GPT (4 layers, 128 wide, as the ChatBERT models) on the same
chitchat conversations and tokenizer, with the same wall-clock budget on 2 CPU cores (~15 minutes, one thread).
It learns every turn of whole conversations left to right; projects/chatbert/eval.py scores it on the same held-out test pairs.
It reaches val loss 4.04 (whole conversations); on the test pairs response perplexity 37.8, R@1/20 0.114, coherence
0.260, and bland greedy replies ("I'm not sure").
Prepare: python -m prepare.chitchat
Train:   python train.py config/chatbert_gpt.py
"""

out_dir = 'out-chatbert-gpt'
eval_interval = 500
eval_iters = 20
log_interval = 50
keep_best = True

dataset = 'chitchat'
batch_size = 16
block_size = 128  # the ChatBERT models' context + response

n_layer = 4
n_head = 4
n_embd = 128

learning_rate = 2e-3
max_iters = 4500
min_lr = 2e-4
warmup_iters = 200
