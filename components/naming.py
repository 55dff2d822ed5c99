"""Names that must be unique across all of Azure (storage accounts, registries)."""

from __future__ import annotations

import pulumi
import pulumi_random as random

GLOBAL_SUFFIX_LENGTH = 8
"""Random lowercase letters and digits appended to a globally unique name."""


def global_name_suffix(name: str, parent: pulumi.Resource) -> pulumi.Output[str]:
    """A random suffix, fixed for the life of the stack, for a name no other Azure tenant may hold.

    Lowercase letters and digits only: the one alphabet both storage account and registry names accept.
    """
    suffix = random.RandomString(
        f"{name}-suffix",
        length=GLOBAL_SUFFIX_LENGTH,
        lower=True,
        upper=False,
        numeric=True,
        special=False,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return suffix.result
