"""Reports -> text. One module per command family, each function returning a string (tables through
``tables.table``) or a JSON-ready dict; none prints (the console does). ``jsontext`` escapes what JSON cannot carry.
"""
