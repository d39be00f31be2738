"""InternViT's RMSNorm is its own copy (each model file stands alone) and stays identical to InternLM2's."""

import inspect

import pytest
import torch

from course_utils.internvl.modeling_intern_vit import InternRMSNorm
from course_utils.internvl.modeling_internlm2 import InternLM2RMSNorm


@pytest.mark.parametrize("method", ["__init__", "forward"])
def test_the_two_rms_norms_have_the_same_code(method):
    assert inspect.getsource(getattr(InternRMSNorm, method)) == inspect.getsource(getattr(InternLM2RMSNorm, method))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_two_rms_norms_compute_the_same_numbers(dtype):
    torch.manual_seed(0)
    vit_norm, llm_norm = InternRMSNorm(48, eps=1e-6), InternLM2RMSNorm(48, eps=1e-6)
    weight = torch.randn(48)
    for norm in (vit_norm, llm_norm):
        norm.weight.data.copy_(weight)
        norm.to(dtype)
    inputs = torch.randn(3, 5, 48, dtype=dtype) * 7
    expected = weight.to(dtype) * (inputs.float() / inputs.float().pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()).to(dtype)
    assert torch.equal(vit_norm(inputs), llm_norm(inputs))
    torch.testing.assert_close(vit_norm(inputs), expected)


def test_the_vision_model_file_imports_no_other_model_file():
    source = inspect.getsource(inspect.getmodule(InternRMSNorm))
    assert "modeling_internlm2" not in source
