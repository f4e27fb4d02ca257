"""Networks by name: ``model.name`` picks a registered family, and the family's builder makes the network from the
arguments of :func:`model_spec`, which every checkpoint keeps beside its weights.

The registry below is the one list of families. A new family is one file that defines ``build(**kwargs)`` (and,
where it can tell without building, ``check(kwargs)`` and its total stride), plus one ``register_model`` line here.
"""

from medseg.models import attention_unet, basicunet, classical, encoders, maskrcnn, segnet, segresnet, unet
from medseg.models.build import build_model, check_model_config, model_spec, size_divisor
from medseg.models.registry import (
    ModelFamily,
    list_models,
    model_family,
    register_model,
    strides_product,
    unregister_model,
)

register_model("unet", unet.build, check_fn=unet.check)
register_model("attention_unet", attention_unet.build, check_fn=attention_unet.check)
register_model("basicunet", basicunet.build, check_fn=basicunet.check)
register_model("segresnet", segresnet.build, check_fn=segresnet.check)
register_model("segnet", segnet.build, check_fn=segnet.check)
_ENCODER = {"encoder": encoders.DEFAULT_ENCODER}  # recorded in the spec when model.encoder is left out
register_model("encoder_unet", encoders.build_unet, encoders.unet_stride, encoders.check_unet, _ENCODER)
for _fcn in ("fcn", "fcn16s", "fcn32s"):
    register_model(_fcn, encoders.fcn_builder(_fcn), encoders.fcn_stride, encoders.check_fcn(_fcn), _ENCODER)
register_model("maskrcnn", maskrcnn.build, maskrcnn.stride, maskrcnn.check, {"encoder": maskrcnn.DEFAULT_BACKBONE})
for _method in classical.METHODS:  # fitted by a parameter search, not trained by gradient steps
    register_model(_method, classical.builder(_method), classical.stride, classical.check(_method), trains="search")

__all__ = [
    "ModelFamily",
    "build_model",
    "check_model_config",
    "list_models",
    "model_family",
    "model_spec",
    "register_model",
    "size_divisor",
    "strides_product",
    "unregister_model",
]
