"""The networks the families train (flax modules): each module cites the paper it implements
(dcgan, unet, song_unet, dit, vae, gpt, lstm, ...) or says it has none (classifier, dense).
No losses, no training.
"""
