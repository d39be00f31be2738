# InternVL2-2B, LoRA on the LLM, fine-tuned on FoodieQA's training split (lesson 03) with `xtuner train`.
#
# XTuner 0.2.0's internvl_v2_internlm2_2b_lora_finetune.py with the original lesson's values, and the changes
# the course measured (see ../shared notes in the README's "Fine-tuning" section and course_utils/training):
#   * paths come from the lesson (environment variables filled in by mmengine: `{{$NAME:default}}`), never
#     edited here, and this file is passed to `xtuner train` by path: nothing is copied into site-packages;
#   * plain mmengine config (string types, no imports), so that `custom_imports` loads the course's XTuner
#     adaptations (course_utils/training/xtuner_patches.py) inside `xtuner train`;
#   * OptimWrapper instead of the stock fp16 AmpOptimWrapper, which fails on a CPU and, with XTuner's bf16
#     model, on a GPU at the first step; with `--deepspeed deepspeed_zero2` XTuner replaces it anyway;
#   * the optimizer state is saved with every checkpoint, so an interrupted run resumes at the right lr;
#   * the training prompt uses InternVL's own system message, the one the model answers with;
#   * the loss on lesson 03's held-out dishes after every epoch (ValidationLoss, COURSE_VALIDATION_JSON).
# By hand, from the repository root (lesson 04, section 7; the model folder in COURSE_MODEL_PATH):
#   PYTHONPATH=. xtuner train configs/internvl2_2b_lora_foodieqa.py --deepspeed deepspeed_zero2

custom_imports = dict(imports=["course_utils.training.xtuner_patches"], allow_failed_imports=False)

# PART 1: settings
model_path = "{{$COURSE_MODEL_PATH:OpenGVLab/InternVL2-2B}}"
data_path = "{{$COURSE_TRAIN_JSON:runs/data/foodieqa-xtuner/train.json}}"
validation_data_path = "{{$COURSE_VALIDATION_JSON:runs/data/foodieqa-xtuner/test.json}}"  # held-out dishes
image_folder = "{{$COURSE_IMAGE_FOLDER:runs/data/foodieqa}}"
# 8192 tokens hold a 12-tile photo with its thumbnail (13 x 256 = 3,328 image tokens) and any FoodieQA answer
max_length = 8192

batch_size = 4  # per GPU: 4 photos of up to 13 tiles fit a 24 GB card with LoRA
accumulative_counts = 2  # an optimizer step every 2 batches: 8 samples per step per GPU
dataloader_num_workers = 4
max_epochs = {{'$COURSE_MAX_EPOCHS:10'}}  # FoodieQA's training split is small (a few hundred questions)
lr = 3e-5  # the original lesson's; LoRA usually takes a higher lr than full fine-tuning (lesson 04's table)
betas = (0.9, 0.999)
weight_decay = 0.05
max_norm = 1.0  # gradient clipping
warmup_ratio = 0.03  # of all iterations; at least 2 (course_utils.training.xtuner_patches.WarmupLinearLR)

save_steps = {{'$COURSE_SAVE_STEPS:64'}}
save_total_limit = 2  # LoRA checkpoints with optimizer state: keep the newest two

# PART 2: model. The ViT (InternViT-300M) and the LLM (InternLM2-1.8B) stay frozen; LoRA adapters on every
# linear layer of the LLM and the projector mlp1 train (XTuner always trains mlp1).
model = dict(
    type="course_utils.training.xtuner_patches.CourseInternVL",
    model_path=model_path,
    freeze_llm=True,
    freeze_visual_encoder=True,
    llm_lora=dict(
        type="peft.LoraConfig",
        r=128,  # rank of the update B @ A: 128 of the LLM's 2048 dimensions
        lora_alpha=256,  # the update is scaled by alpha / r = 2
        lora_dropout=0.05,
        target_modules=None,  # None: XTuner picks every linear layer of the LLM except the output head
        task_type="CAUSAL_LM",
    ),
    float32_on_cpu=True,  # bf16 on a GPU as XTuner loads it; float32 only when there is no GPU
    gradient_checkpointing=True,  # recompute activations in the backward pass: less memory for 8192 tokens
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
    max_dynamic_patch=None,  # None: the model's own tiling (InternVL2-2B: up to 12 tiles and a thumbnail)
    use_thumbnail=None,
)
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
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
               dist_cfg=dict(backend="{{$COURSE_DIST_BACKEND:nccl}}"))  # the launcher: nccl on GPUs, gloo on a CPU
# mmengine writes every logged scalar (loss, lr, GPU memory) to <work_dir>/<timestamp>/vis_data/scalars.json;
# TensorBoard's event files are written too when tensorboard is installed (`tensorboard --logdir runs/finetune`)
visualizer = dict(type="course_utils.training.xtuner_patches.scalar_visualizer")
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
log_processor = dict(by_epoch=False)
