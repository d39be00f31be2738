# The tiny base model, LoRA on the LLM, fine-tuned on the FoodieQA training split (lesson 03) with `xtuner train`.
#
# internvl2_2b_lora_foodieqa.py (the lesson's recipe, each value explained there) with other sizes, paths and
# schedule, nothing else: the same XTuner model, dataset, sampler, loop and hooks; ViT and LLM frozen; LoRA on
# every linear layer of the LLM; the projector mlp1 trained; the model's own image tiling. What differs:
#   * sizes: rank 16 of the tiny LLM's 192 dimensions (alpha / r = 2 as in the 2B recipe), 1024 tokens (one
#     64-token tile and a short question and answer), batch 8, no gradient checkpointing (nothing to save);
#   * paths: the default model is the course's tiny base (runs/models/tiny-internvl2), images the synthetic FoodieQA;
#   * schedule: lr 2e-3 for a model a thousand times smaller (measured: configs/README.md), 10 epochs of a smaller
#     split, and the dist backend gloo (a CPU) unless the launcher says nccl.
# Run by course_utils.training (lesson 04 without a GPU); by hand, from the repository root (lesson 04, section 7):
#   PYTHONPATH=. xtuner train configs/internvl2_tiny_lora_foodieqa.py --work-dir runs/finetune/by-hand --deepspeed deepspeed_zero2

custom_imports = dict(imports=["course_utils.training.xtuner_patches"], allow_failed_imports=False)

# PART 1: settings
model_path = "{{$COURSE_MODEL_PATH:runs/models/tiny-internvl2}}"
data_path = "{{$COURSE_TRAIN_JSON:runs/data/foodieqa-xtuner/train.json}}"
validation_data_path = "{{$COURSE_VALIDATION_JSON:runs/data/foodieqa-xtuner/test.json}}"  # held-out dishes
image_folder = "{{$COURSE_IMAGE_FOLDER:runs/data/synthetic-foodieqa}}"
max_length = 1024  # one 64-token tile and a short question and answer

batch_size = 8  # per device
accumulative_counts = 1
dataloader_num_workers = 1  # one worker decodes pictures while the main process trains (2-core CPU)
max_epochs = {{'$COURSE_MAX_EPOCHS:10'}}
lr = 2e-3
betas = (0.9, 0.999)
weight_decay = 0.05
max_norm = 1.0  # gradient clipping
warmup_ratio = 0.03  # of all iterations; at least 2 (course_utils.training.xtuner_patches.WarmupLinearLR)

save_steps = {{'$COURSE_SAVE_STEPS:100'}}
save_total_limit = 2  # LoRA checkpoints with optimizer state: keep the newest two

# PART 2: model. The ViT and the LLM stay frozen; LoRA adapters on every linear layer of the LLM and the projector
# mlp1 train (XTuner always trains mlp1).
model = dict(
    type="course_utils.training.xtuner_patches.CourseInternVL",
    model_path=model_path,
    freeze_llm=True,
    freeze_visual_encoder=True,
    llm_lora=dict(
        type="peft.LoraConfig",
        r=16,  # rank of the update B @ A: 16 of the LLM's 192 dimensions
        lora_alpha=32,  # the update is scaled by alpha / r = 2
        lora_dropout=0.05,
        target_modules=None,  # None: XTuner picks every linear layer of the LLM except the output head
        task_type="CAUSAL_LM",
    ),
    float32_on_cpu=True,  # bf16 on a GPU as XTuner loads it; float32 only when there is no GPU
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
    max_dynamic_patch=None,  # None: the model's own tiling (the tiny base: one 224-px tile)
    use_thumbnail=None,
)
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    persistent_workers=True,
    dataset=train_dataset,
    sampler=dict(
        type="xtuner.dataset.samplers.LengthGroupedSampler",  # similar lengths together: less padding
        length_property="modality_length",
        per_device_batch_size=batch_size * accumulative_counts,
    ),
    collate_fn=dict(type="xtuner.dataset.collate_fns.default_collate_fn"),
)
# lesson 03's held-out questions: their items carry train.json's fields (and what scoring needs)
validation_dataset = dict(train_dataset, data_paths=validation_data_path)

# PART 4: optimizer and schedule
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="torch.optim.AdamW", lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
)
param_scheduler = [  # linear warmup, then cosine decay to 0
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
custom_hooks = [
    # a run resumed on another number of GPUs goes on at the same place in its data and schedule
    dict(type="course_utils.training.xtuner_patches.ResumeAtSamePlace"),
    # the loss on the held-out dishes before training and after every epoch, logged as val_loss
    dict(type="course_utils.training.xtuner_patches.ValidationLoss", dataset=validation_dataset,
         batch_size=batch_size),
]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="{{$COURSE_DIST_BACKEND:gloo}}"))  # the launcher: nccl on GPUs, gloo on a CPU
# mmengine writes every logged scalar (loss, lr, GPU memory) to <work_dir>/<timestamp>/vis_data/scalars.json;
# TensorBoard's event files are written too when tensorboard is installed (`tensorboard --logdir runs/finetune`)
visualizer = dict(type="course_utils.training.xtuner_patches.scalar_visualizer")
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
log_processor = dict(by_epoch=False)
