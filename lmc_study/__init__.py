"""lmc_study: the book's study of generalized linear mode connectivity, the first user of lmc_core.

What only the book needs lives here; the library (`lmc_core`) never imports it.

- `profiles` (smoke, cpu, full, paper), `models` (the ViT and GPT-2 of a recipe), `train` and
  `train_stack` (the paper's recipes; several seeds as one vmapped stack), `data` (Fashion-MNIST,
  the Shakespeare plays, tokenizers, the splits), `baselines` (trivial models every endpoint
  must beat);
- `experiments` (what the pairwise, multi-model and width chapters run), `curve_study` and
  `multitask` (chapter 09), `unlearning` and `unlearning_study` (chapter 10);
- `paper` (the paper's numbers and settings, as data), `table2` (ours against its Table 2 and
  method order), `checks` (each figure and Table 3), `book` (the book as a whole);
- `report` (a chapter's run: provenance, results.json), `tables`, `stats`.

A notebook reads: `from lmc_study import experiments, checks` and `from lmc_core import barrier`.
"""
