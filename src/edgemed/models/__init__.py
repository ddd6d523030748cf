"""Student zoo and teacher adapters (torch, imported by the functions that need it)."""

from edgemed.models._student_io import load_student, student_payload
from edgemed.models._zoo import STUDENTS, StudentInfo, StudentSpec, create_student, list_students

__all__ = ["STUDENTS", "StudentInfo", "StudentSpec", "create_student", "list_students", "load_student",
           "student_payload"]
