"""What a trained model is measured on: every metric in one pass, certificates, the gradient-masking checks, trigger saliency."""
