"""Model adapters, the seed studies' architectures and their shared losses; training lives in ``training/``.

- ``base``: ``ModelAdapter``, the one interface every method sees; ``adapters``: turning a network
  into one (class names, input size, weights); ``spec``: ``ModelSpec``, what the registry holds;
  ``checkpoint``: checkpoints and weights identity.
- ``losses``: the loss pieces more than one model uses; ``fixation_frames``: fixations as padded
  tensors and Gaussian profiles; ``egd_encoder``: what the EGD EfficientNet models share.
- the seed studies: ``unet_gaze``, ``effnet_baseline``, ``temporal_gaze``, ``heatmap_generator``,
  ``densenet`` (``densenet121``, ``densenet_aug``), ``mimic_guided``.
- the open families: ``torchvision_family``, ``timm_family``, ``xrv``; ``cam_layer``: the rule
  that finds their Grad-CAM layer; ``captum_compat``: patches that let Captum's DeepLift run.
- ``label_map``: making a model answer in a dataset's classes.
"""
