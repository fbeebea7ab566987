"""Varied synthetic documents for the load-bearing integration tests."""
from __future__ import annotations


def document(n: int) -> str:
    """Document n of a mix: small and large invoices, contracts, reports, emails."""
    kind = n % 5
    if kind in (0, 1):
        quantity = 2 + n % 7
        price = 40 + (n * 37) % 2500 if kind == 0 else 3000 + (n * 53) % 4000
        total = quantity * price
        return (f"INVOICE\nInvoice Number: INV-{n:05d}\nFrom: Supplier {n % 13}\nDate: 2024-10-{1 + n % 28:02d}\n"
                f"- Item {n}  {quantity} x ${price:,.2f} = ${total:,.2f}\nTotal: ${total:,.2f}\n")
    if kind == 2:
        return (f"SERVICES AGREEMENT {n}\nThis agreement is made between Steward Corp and Partner {n} Inc.\n"
                f"Effective date: 2024-09-{1 + n % 28:02d}\nTerm: 12 months\nFee: ${1000 + n:,.2f} per month\n")
    if kind == 3:
        return (f"Quarterly Operations Report {n}\nPrepared by: Analyst {n % 4}\nPeriod: Q3 2024\n"
                f"Summary: throughput rose by {n % 17} percent.\n")
    return (f"From: vendor{n}@example.com\nTo: ap@example.com\nSubject: Statement {n}\nDate: 2024-11-01\n\n"
            f"Hello, please find statement {n} attached. Please confirm receipt.\n")
