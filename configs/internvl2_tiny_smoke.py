# Smoke fine-tuning of the embedded tiny InternVL2 on the synthetic FoodieQA, through `xtuner train` on a CPU.
#
# The same pieces as internvl2_2b_lora_foodieqa.py (XTuner's InternVL model, dataset, sampler, loop and hooks),
# with a recipe that makes a 729k-parameter model with random weights learn the synthetic rules in minutes:
# everything trains (ViT, projector and LLM; a random model has nothing worth freezing), one 224-px tile per
# picture, a higher learning rate, several epochs. Run by course_utils.training (lesson 04); by hand:
#   PYTHONPATH=. COURSE_MODEL_PATH=... COURSE_TRAIN_JSON=... COURSE_IMAGE_FOLDER=... \
#     xtuner train configs/internvl2_tiny_smoke.py --work-dir runs/finetune/smoke
# Paths come from those environment variables (mmengine fills in `{{$NAME:default}}`); the defaults are the
# course's run directory as lesson 03 leaves it. Only string types here: a config without imports is read by
# mmengine as a plain config, which is what makes `custom_imports` (the course's XTuner adaptations) work.

custom_imports = dict(imports=["course_utils.training.xtuner_patches"], allow_failed_imports=False)

# PART 1: settings
model_path = "{{$COURSE_MODEL_PATH:runs/models/tiny-internvl2}}"
data_path = "{{$COURSE_TRAIN_JSON:runs/data/foodieqa-xtuner/train.json}}"
image_folder = "{{$COURSE_IMAGE_FOLDER:runs/data/synthetic-foodieqa}}"
max_length = 1024  # one 64-token tile and a short question and answer fit easily

batch_size = 8  # per device
accumulative_counts = 1
dataloader_num_workers = 1  # one worker decodes pictures while the main process trains (2-core CPU)
max_epochs = {{'$COURSE_MAX_EPOCHS:6'}}  # measured: 84.7 % held-out accuracy after 6 epochs (chance: 25 %)
lr = 3e-4  # a random model needs large steps; 3e-5 (the 2B LoRA lesson's) barely moves it
betas = (0.9, 0.999)
weight_decay = 0.0
max_norm = 1.0  # gradient clipping
warmup_ratio = 0.03  # of all iterations; at least 2 (course_utils.training.xtuner_patches.WarmupLinearLR)

save_steps = {{'$COURSE_SAVE_STEPS:200'}}
save_total_limit = 2  # keep the newest two checkpoints: enough to resume

# PART 2: model
model = dict(
    type="course_utils.training.xtuner_patches.CourseInternVL",
    model_path=model_path,
    freeze_llm=False,  # all of it trains: ViT, projector mlp1 and LLM
    freeze_visual_encoder=False,
    float32_on_cpu=True,
    gradient_checkpointing=False,  # recomputation saves memory a tiny model does not need
)

# PART 3: data
prompt_template = dict(  # XTuner's PROMPT_TEMPLATE.internlm2_chat, written out (a plain config imports nothing)
    SYSTEM="<|im_start|>system\n{system}<|im_end|>\n",
    INSTRUCTION="<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
    SUFFIX="<|im_end|>",
    SUFFIX_AS_EOS=True,
    SEP="\n",
    STOP_WORDS=["<|im_end|>"],
)
train_dataset = dict(
    type="course_utils.training.xtuner_patches.CourseInternVLDataset",
    model_path=model_path,
    data_paths=data_path,
    image_folders=image_folder,
    template=prompt_template,
    max_length=max_length,
    max_dynamic_patch=1,  # one tile, no thumbnail: the rules are visible at 224 px, and 6 tiles are 4x slower
    use_thumbnail=False,
)
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    persistent_workers=True,
    dataset=train_dataset,
    sampler=dict(
        type="xtuner.dataset.samplers.LengthGroupedSampler",
        length_property="modality_length",
        per_device_batch_size=batch_size * accumulative_counts,
    ),
    collate_fn=dict(type="xtuner.dataset.collate_fns.default_collate_fn"),
)

# PART 4: optimizer and schedule
optim_wrapper = dict(
    type="OptimWrapper",  # plain float32 steps; see internvl2_2b_lora_foodieqa.py for why not AmpOptimWrapper
    optimizer=dict(type="torch.optim.AdamW", lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
)
param_scheduler = [
    dict(type="course_utils.training.xtuner_patches.WarmupLinearLR", start_factor=1e-5, by_epoch=True,
         begin=0, end=warmup_ratio * max_epochs, convert_to_iter_based=True),
    dict(type="course_utils.training.xtuner_patches.CosineAfterWarmupLR", eta_min=0.0, by_epoch=True,
         begin=warmup_ratio * max_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type="xtuner.engine.runner.TrainLoop", max_epochs=max_epochs)

# PART 5: runtime
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", log_metric_by_epoch=False, interval={{'$COURSE_LOG_INTERVAL:10'}}),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=save_steps, max_keep_ckpts=save_total_limit,
                    save_optimizer=True, save_last=True),  # the optimizer's state makes a resumed run continue
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
# a run resumed on another number of GPUs goes on at the same place in its data and schedule
custom_hooks = [dict(type="course_utils.training.xtuner_patches.ResumeAtSamePlace")]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="{{$COURSE_DIST_BACKEND:gloo}}"))  # the launcher: nccl on GPUs, gloo on a CPU
# mmengine writes every logged scalar to <work_dir>/<timestamp>/vis_data/scalars.json: the launcher's live curve;
# TensorBoard's event files too when tensorboard is installed (`tensorboard --logdir runs/finetune`)
visualizer = dict(type="course_utils.training.xtuner_patches.scalar_visualizer")
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
log_processor = dict(by_epoch=False)
