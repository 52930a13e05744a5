"""Scalable oversight: protocols in which weaker overseers judge stronger models (debate, consultancy,
critique), and the pieces they share."""
