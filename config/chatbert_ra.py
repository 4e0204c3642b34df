"""
ChatBERT-RA: a bi-encoder (4 layers, 128 wide, bidirectional) that embeds contexts and responses in one space, trained
with in-batch negatives (each context's response against the batch's 63 others, both ways) at a learned temperature.
It answers with the training response nearest to the context, from a Faiss index of every distinct training response
built at the first chat and saved beside the checkpoint. Val loss is the in-batch contrastive loss (ln 64 = 4.16 at
chance). This config's schedule is ~15 minutes on one CPU thread (1,800 iterations).
The measured runs (python -m projects.chatbert.experiment; projects/chatbert/chatbert_runs.json) train 90 s each
on one shared CPU thread, 1/10 of this config's 15-minute schedule, shrunk to afford 3 seeds per kind: max_iters from a
back-to-back calibration of ms/iter (1881 ms: 48 iterations), warmup and decay scaled to it.
Best val loss 4.13 ± 0.03 over 3 seeds: barely below chance; on the test pairs see projects/chatbert/README.md.
Prepare: python -m prepare.chitchat
         python -m prepare.chatbert --tokenizer=data/chitchat
Train:   python train.py config/chatbert_ra.py
Chat:    python chat.py --out_dir=out-chatbert-ra   (/top K shows the best candidates and their scores)
"""

out_dir = 'out-chatbert-ra'
eval_interval = 250
eval_iters = 10
log_interval = 25
keep_best = True

model_kind = 'chatbert_ra'
dataset = 'chatbert'
data_source = 'pairs'
batch_size = 64  # the in-batch negatives: more is a harder, better task
block_size = 128  # 96 context + 32 response tokens

causal = False
n_layer = 4
n_head = 4
n_embd = 128

learning_rate = 1e-3
max_iters = 1800
min_lr = 1e-4
warmup_iters = 100
