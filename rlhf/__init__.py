"""gpt2-rlhf: the whole RLHF recipe for GPT-2, measured honestly and published to the Hub.

One import namespace over the repository's folders (pyproject.toml maps them):

    gpt2_rlhf.train        data, base, SFT, reward model, PPO (uses nothing above it)
    gpt2_rlhf.evaluation   base vs SFT vs PPO on held-out prompts (uses train)
    gpt2_rlhf.model_card   cards, Hub publishing, reproduce (uses train and evaluation)
    gpt2_rlhf.space        the Gradio Space folder (stands alone: it ships by itself)
    gpt2_rlhf.cli          the `rlhf` command and `rlhf run`'s pipeline (this folder, rlhf/: the top)

Dependencies run one way, top to bottom; tests/test_architecture.py enforces it.
"""
