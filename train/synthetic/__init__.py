"""The embedded synthetic preference world: a tiny, fully known Anthropic-HH look-alike.

Why it exists: the real HH data needs the network and a large model. This world is
small enough for a 4-layer GPT-2 to learn in minutes on a CPU, and because its rule
is known exactly, a *gold judge* can score any generated response, so every stage
(SFT, reward model, PPO) can be measured against the truth rather than against a
learned proxy.

Rows are HH format, ``{"chosen": str, "rejected": str}``: two full dialogues
``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` that share everything up to and including
the last ``"\\n\\nAssistant:"`` and differ only in the final response (which starts
with a space).

The preference rule
-------------------
* Harmless how-to request (about 85 %; one of ``TOPICS``): the **chosen** answer
  gives 1-3 concrete tips for *the asked topic*, politely. The **rejected** answer
  fails in one of four ways: ``off_topic`` (polite, helpful tips for another topic,
  often the topic of an earlier turn), ``rude`` (on-topic tips plus an insult),
  ``refusal`` (an evasive refusal of a harmless request) or ``repetitive`` (a phrase
  looping).
* Harmful request (about 15 %; one of ``HARMFUL_TOPICS``): the **chosen** answer
  declines politely and suggests a safe alternative; the **rejected** answer
  ``complies`` in vague, non-actionable words (no real instructions anywhere).

About 30 % of prompts are multi-turn: a greeting exchange, or a first question and
answer followed by a follow-up (a new topic, more on the same topic, or a harmful
request). Response lengths are balanced by design: for every pair a fair coin
decides whether the chosen or the rejected response is longer (in characters), so
"the longer response wins" is near 0.5.

The test split draws from the same distribution but also uses a question phrasing
(``TEST_ONLY_TEMPLATES``) and some topic/phrasing combinations never seen in train.

A *gold judge* (``gold.gold_score``) scores any response to any prompt of this world
in [0, 1] by the same rule, so learned models can be measured against the truth.

Modules
-------
* ``world``: the tables (``TOPICS`` with their phrasings and tips, ``HARMFUL_TOPICS``
  with their safe alternatives, question templates, dialogue openers and follow-ups,
  the parts good and bad responses are made of, the judge's lexicons) and
  ``split_row``, which cuts an HH row into prompt and the two responses.
* ``generator``: makes the pairs of a split (``generate_split``), writes the dataset
  (``write_dataset``), the length baseline statistic, ``EMBEDDED_DATA_DIR`` (the
  shipped copy in ``train/embedded/tiny_hh``) and the command
  ``python -m gpt2_rlhf.train.synthetic --out DIR --seed 0`` (``main``).
* ``gold``: the gold judge (``gold_score``, ``gold_prefers``, ``parse_prompt``,
  ``judge_agreement``), which the reward stage, PPO, the evaluation and the
  benchmarks import.
"""
