"""Server and edge defenses as pure functions on numpy update vectors and torch models.

No Flower imports: the Flower adapters in ``strategies/`` and ``clients/`` call
these.  Modules (each names the paper it implements):

``detection``   accuracy, L2-norm and cosine checks of Chen et al.'s multi-party poisoning paper
``selection``   cosine to the previous global update, negative-cosine drop, HDBSCAN majority (layered defense)
``foolsgold``   FoolsGold client weights (Fung et al.)
``flame``       FLAME: HDBSCAN filtering, median-norm clipping, Gaussian noise (Nguyen et al.)
``abl``         anti-backdoor learning: its phases and their schedule over the rounds (Li et al.)
``abl_losses``  anti-backdoor learning's LGA and Eq. 9 losses and lowest-loss isolation
``attention``   self-attention distillation maps and loss (Hou et al.; layered defense)
``audit``       PDGAN auditing: majority-vote labels and the accuracy threshold (Zhao et al.)
``inversion``   model-inversion audit data (the PDGAN paper's alternative generator)
"""
