"""wrapper_study: does fine-tuning delete a pretrained capability, or only wrap it?"""

__version__ = '0.1.0'
