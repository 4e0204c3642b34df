"""
The BERT approximator (projects/approximator/README.md): a DeepSets + attention-pooling student of all-MiniLM-L6-v2, trained on
the chitchat messages as bags of words, n-grams, skip-grams and, for words it lacks, the teacher's own WordPiece
pieces: 4.4M learned parameters (3.0M of them the entries' own 64-dim vectors), 3,000 iterations of 256 messages
in ~11 minutes on one busy CPU thread. On the test messages (seen-in-train ones left out) its int8 form has
overlap@10 0.470 with the teacher's neighbours and Spearman 0.757, and 76% of the teacher's next-turn Recall@10;
out of domain, shakespeare 0.357 / 0.668 and Python docstrings 0.349 / 0.529 (python -m projects.approximator.eval).
Prepare: python -m prepare.approximator --wordpieces=True --out=data/approximator_wp    # ~40 min once (the teacher's cache)
Train:   python train.py config/approximator.py
Measure: python -m projects.approximator.eval            # neighbour agreement in and out of domain, with intervals
"""
out_dir = 'out-approximator'
dataset = 'approximator_wp'  # the teacher's WordPiece vocabulary added: the lever val chose (README)
data_source = 'bags'
model_kind = 'approximator'
model_args = {  # the approximator's own fields (model_approximator.ApproximatorConfig)
    'pooling': 'attention',
    'entry_dim': 64,  # each entry's learned vector beside the teacher's (1.9M of the 3.3M parameters; folded into
                      # the tables)
    'mse_weight': 1.0, 'cos_weight': 1.0, 'sim_weight': 1.0,  # the loss: squared distance, 1 - cosine, pairwise cosines
}
n_layer = 2  # phi's layers
n_embd = 512
n_head = 4  # attention-pooling heads
block_size = 1024  # entries of a bag that count: 512 words give 1,024 at most (each its n-gram and a skip-gram); a
                  # batch is padded to its largest bag, so a chat message's ~10 cost no more
batch_size = 256
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.01
max_iters = 3000
warmup_iters = 100
eval_interval = 250
eval_iters = 10
log_interval = 50
always_save_checkpoint = False  # ckpt.pt is the best model by val loss, which early stopping then keeps
patience = 4
dtype = 'float32'
