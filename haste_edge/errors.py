"""Errors the engine reports to users; the CLI prints them as one line."""


class HasteEdgeError(Exception):
    """Base class: a problem with the user's model, input or request, not a bug."""


class UnsupportedOpError(HasteEdgeError):
    pass


class ModelFileError(HasteEdgeError):
    pass


class InputError(HasteEdgeError):
    pass
