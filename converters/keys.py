"""What every pure key map (`flownet_keys`, `mmseg_keys`, `dff_keys`) shares.

A key map turns a flat PyTorch state dict `{name: ndarray}` into this project's nested
`{layer: {param: ndarray}}`. A source key it does not know is not dropped: it comes back under
the reserved layer `UNMAPPED` with its full source key as the parameter name, so the strict
loader reports it as unexpected instead of the key map hiding it.
"""

UNMAPPED = '<unmapped>'
