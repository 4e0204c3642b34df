"""
ChatBERT-ED: a bidirectional encoder over the context (96 tokens) and a causal decoder that writes the response
(up to 32 tokens), attending to the encoder through cross-attention; 2 + 2 layers, 128 wide, so that its parameter
count is the GPT baseline's (config/chatbert_gpt.py). Val loss is the response's NLL per token, its end token
included: the GPT baseline's response perplexity measures the same thing. About 15 minutes on one CPU thread; it
reaches val loss 4.29, and on the test pairs response perplexity 56.2 (the GPT: 37.8), R@1/20 0.082, looping greedy
replies (projects/chatbert/README.md).
Prepare: python -m prepare.chitchat
         python -m prepare.chatbert --tokenizer=data/chitchat
Train:   python train.py config/chatbert_ed.py
Chat:    python chat.py --out_dir=out-chatbert-ed
"""

out_dir = 'out-chatbert-ed'
eval_interval = 500
eval_iters = 20
log_interval = 50
keep_best = True

model_kind = 'chatbert_ed'
dataset = 'chatbert'
data_source = 'pairs'
batch_size = 32
block_size = 128  # 96 context + 32 response tokens

causal = False  # the encoder's; the decoder is causal
n_layer = 2  # encoder blocks, and as many decoder blocks
n_head = 4
n_embd = 128

learning_rate = 2e-3
max_iters = 4800
min_lr = 2e-4
warmup_iters = 200
